"""The hostile-but-well-meaning experiments of bench.hostile against a real server (loopback, bounded in count and
time), with short timeouts so each finishes in seconds: what a stranger can no longer do to the server."""

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.hostile import LIGHT, attention_request, heavy_request, memory_mb, post
from conftest import ROOT, running_server

BUNDLES = [ROOT / "models" / "en-de" / "onnx", ROOT / "models" / "de-en" / "onnx"]
HEAD_TIMEOUT, BODY_TIMEOUT, DEADLINE, MAX_CONNECTIONS = 1.0, 1.0, 6.0, 40


@pytest.fixture(scope="module")
def server():
    with running_server("--model", str(BUNDLES[0]), "--model", str(BUNDLES[1]), "--header-timeout",
                        str(HEAD_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--deadline", str(DEADLINE),
                        "--keep-alive", "1", "--max-connections", str(MAX_CONNECTIONS)) as (url, process):
        yield url, process.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (100 per second here)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it is still open after seconds."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
        return received
    except socket.timeout:
        return None
    except ConnectionResetError:
        return received


def test_attention_over_the_ceiling_is_refused_before_any_work(server):
    url, pid = server
    started = time.perf_counter()
    refused = post(url, attention_request(), timeout=30)  # the 222 MB answer
    assert refused["status"] == 422 and "at most 1,000,000 per request" in refused["error"]
    assert time.perf_counter() - started < 2
    allowed = post(url, {"inputs": " ".join(["dog"] * 100), "parameters": {"src_lang": "en", "tgt_lang": "de",
                                                                          "return_attention": True}}, timeout=60)
    assert allowed["status"] == 200 and allowed["bytes"] < 3_000_000  # documented: about 2.7 MB at the ceiling
    assert memory_mb(url, pid)["peak"] < 500  # before the limits: 1,339 MB after one such request


def test_an_abandoned_heavy_request_stops_and_does_not_delay_the_next(server):
    url, pid = server
    gave_up = post(url, heavy_request(), timeout=2.0)  # 64 x 2,000-character words, beam 8, 256 tokens
    assert gave_up["status"] == "ReadTimeout"
    good = post(url, LIGHT, timeout=30)
    assert good["status"] == 200 and good["seconds"] < 3  # before: 18.8 s behind the abandoned request
    time.sleep(0.5)
    before = cpu_seconds(pid)
    time.sleep(2)
    assert cpu_seconds(pid) - before < 0.5  # the abandoned search stopped: the server is idle
    assert httpx.get(f"{url}/health", timeout=5).json()["queued"] == {"en-de": 0, "de-en": 0}
    assert memory_mb(url, pid)["peak"] < 500  # before: 1,786 MB


def test_a_heavy_request_that_waits_meets_its_deadline_and_light_ones_pass_it(server):
    url, _ = server
    results = []
    heavy = threading.Thread(target=lambda: results.append(httpx.post(f"{url}/translate", json=heavy_request(),
                                                                      timeout=60)))
    heavy.start()
    time.sleep(1)
    light = [post(url, LIGHT, timeout=30) for _ in range(3)]
    heavy.join()
    assert all(r["status"] == 200 and r["seconds"] < 3 for r in light), light
    (response,) = results
    assert response.status_code == 504 and response.json()["error_type"] == "timeout"
    assert set(response.json()) == {"error", "error_type", "field"}


def test_a_silent_or_trickling_client_is_cut_off(server):
    url, _ = server
    silent = connect(url)
    assert closed_within(silent, HEAD_TIMEOUT + 2) == b""  # closed, nothing sent
    trickle = connect(url)
    started = time.monotonic()
    try:
        for byte in b"POST /translate HTTP/1.1\r\nHost: x\r\n":
            trickle.send(bytes([byte]))
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_within(trickle, HEAD_TIMEOUT + 2) is not None and time.monotonic() - started < HEAD_TIMEOUT + 3


def test_a_client_that_lies_about_its_content_length_gets_408(server):
    url, _ = server
    liar = connect(url)
    liar.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                 b'{"inputs": ')
    answer = closed_within(liar, BODY_TIMEOUT + 3)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408") and b'"error_type":"timeout"' in answer


def test_idle_connections_never_block_others_and_the_cap_answers_503(server):
    url, _ = server
    idle = [connect(url) for _ in range(MAX_CONNECTIONS - 2)]
    try:
        assert post(url, LIGHT, timeout=10)["status"] == 200  # served beside them
        idle += [connect(url) for _ in range(4)]  # past the cap
        over = closed_within(idle[-1], 3)
        assert over.startswith(b"HTTP/1.1 503") and b'"error_type": "overloaded"' in over
        assert all(closed_within(sock, HEAD_TIMEOUT + 3) is not None for sock in idle)  # all cut off
        assert post(url, LIGHT, timeout=10)["status"] == 200
    finally:
        for sock in idle:
            sock.close()
