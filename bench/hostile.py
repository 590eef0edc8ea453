"""Hostile-but-well-meaning requests against a running ``python -m serve http``: what they cost the server.

    python -m serve http --model models/en-de/onnx --model models/de-en/onnx --port 8000 &
    python -m bench.hostile --url http://127.0.0.1:8000 --pid $!

Two experiments, bounded in count and time, loopback only (the same guard as ``serve.loadtest``):

- attention: 4 inputs of one 2,000-character word each, ``truncation: longest_first``, ``max_new_tokens: 256``,
  ``return_attention``: alone, then two at once while a light client asks for a short sentence every 0.5 s;
- heavy: 64 such words, beam 8, 256 new tokens, sent by a client that gives up after ``--give-up`` seconds, and a
  good request sent right after it;
- ceiling (on request): the largest attention answer the limits allow, found by bisection over the input length;
- waiting-heavy (on request): the heavy request with a client that waits, and five light requests sent meanwhile.

Reports each answer's status, size and time, how long the light and good requests waited, and the server's
resident memory (``--pid``: now and peak, from /proc on Linux; else /health's figure).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import threading
import time
from pathlib import Path

from serve.loadtest import percentile, require_loopback

LIGHT = {"inputs": "A dog runs across the grass.", "parameters": {"src_lang": "en", "tgt_lang": "de"}}


def long_word(seed: int, length: int = 2000) -> str:
    """One 2,000-character 'word' of random letters: as many subword tokens as a word can have."""
    generator = random.Random(seed)
    return "".join(generator.choice(string.ascii_lowercase) for _ in range(length))


def attention_request(count: int = 4) -> dict:
    return {"inputs": [long_word(i) for i in range(count)],
            "parameters": {"src_lang": "en", "tgt_lang": "de", "truncation": "longest_first", "return_attention": True,
                           "generate_parameters": {"max_new_tokens": 256}}}


def heavy_request(count: int = 64) -> dict:
    return {"inputs": [long_word(100 + i) for i in range(count)],
            "parameters": {"src_lang": "en", "tgt_lang": "de", "truncation": "longest_first",
                           "generate_parameters": {"num_beams": 8, "max_new_tokens": 256}}}


def memory_mb(url: str, pid: int | None) -> dict:
    """The server's resident memory now and at its peak (MB)."""
    import httpx

    if pid is not None and Path(f"/proc/{pid}/status").is_file():
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}
    return {"rss": httpx.get(f"{url}/health", timeout=30).json()["rss_bytes"] / 2**20, "peak": None}


def post(url: str, body: dict, timeout: float) -> dict:
    """One request: status (or the client-side error), answer bytes, seconds."""
    import httpx

    started = time.perf_counter()
    try:
        response = httpx.post(f"{url}/translate", json=body, timeout=timeout)
        return {"status": response.status_code, "bytes": len(response.content),
                "seconds": round(time.perf_counter() - started, 2),
                "error": response.json().get("error") if response.status_code != 200 else None}
    except httpx.HTTPError as error:
        return {"status": type(error).__name__, "bytes": 0, "seconds": round(time.perf_counter() - started, 2)}


def light_client(url: str, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        result = post(url, LIGHT, timeout=120)
        latencies.append(result["seconds"] if result["status"] == 200 else float("inf"))
        stop.wait(0.5)


def attention_experiment(url: str, pid: int | None) -> dict:
    alone = post(url, attention_request(), timeout=300)
    stop, latencies, results = threading.Event(), [], []
    light = threading.Thread(target=light_client, args=(url, stop, latencies))
    light.start()
    pair = [threading.Thread(target=lambda: results.append(post(url, attention_request(), timeout=300)))
            for _ in range(2)]
    for thread in pair:
        thread.start()
    for thread in pair:
        thread.join()
    stop.set()
    light.join()
    return {"alone": alone, "two_at_once": results, "memory_mb": memory_mb(url, pid),
            "light_requests": len(latencies), "light_latency_s": {"p50": round(percentile(latencies, 50), 2),
                                                                  "max": round(max(latencies), 2)}}


def ceiling_experiment(url: str, pid: int | None) -> dict:
    """The largest attention answer the server allows: one input of n words, the largest n it accepts (bisection)."""
    def request(words: int) -> dict:
        return {"inputs": " ".join(["dog"] * words), "parameters": {"src_lang": "en", "tgt_lang": "de",
                                                                     "return_attention": True}}

    low, high, best = 1, 400, None
    while low <= high:  # at most 9 probes; a refused one costs nothing
        middle = (low + high) // 2
        result = post(url, request(middle), timeout=120)
        if result["status"] == 200:
            low, best = middle + 1, dict(result, words=middle)
        else:
            high = middle - 1
    return {"largest_allowed": best, "memory_mb": memory_mb(url, pid)}


def waiting_heavy_experiment(url: str, pid: int | None) -> dict:
    """The heavy request with a client that waits, and light requests sent while it runs."""
    results, latencies = [], []
    heavy = threading.Thread(target=lambda: results.append(post(url, heavy_request(), timeout=600)))
    heavy.start()
    time.sleep(1)
    for _ in range(5):
        latencies.append(post(url, LIGHT, timeout=300)["seconds"])
    heavy.join()
    return {"heavy": results[0], "light_latency_s": latencies, "memory_mb": memory_mb(url, pid)}


def heavy_experiment(url: str, pid: int | None, give_up: float) -> dict:
    before = memory_mb(url, pid)
    heavy = post(url, heavy_request(), timeout=give_up)  # the client leaves after give_up seconds
    good = post(url, LIGHT, timeout=300)
    time.sleep(2)
    return {"heavy": heavy, "good_after_heavy": good, "memory_mb": {"before": before, "after": memory_mb(url, pid)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a server of this machine (loopback)")
    parser.add_argument("--pid", type=int, help="the server's process id, for its resident memory")
    parser.add_argument("--give-up", type=float, default=3.0, help="seconds the heavy request's client waits")
    parser.add_argument("--experiments", nargs="+", default=["attention", "heavy"],
                        choices=["attention", "heavy", "ceiling", "waiting-heavy"])
    args = parser.parse_args(argv)
    require_loopback(args.url)
    report = {}
    if "attention" in args.experiments:
        report["attention"] = attention_experiment(args.url, args.pid)
    if "heavy" in args.experiments:
        report["heavy"] = heavy_experiment(args.url, args.pid, args.give_up)
    if "ceiling" in args.experiments:
        report["ceiling"] = ceiling_experiment(args.url, args.pid)
    if "waiting-heavy" in args.experiments:
        report["waiting_heavy"] = waiting_heavy_experiment(args.url, args.pid)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
