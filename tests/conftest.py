"""Shared fixtures. Torch-free: tests that need torch carry ``@pytest.mark.torch`` (or skip their module without it),
so ``pytest -m "not torch"`` runs the rest where torch is not installed."""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None
if HAS_TORCH:
    import torch

    torch.set_num_threads(1)  # tiny models gain nothing from threads, and it keeps tests fast on a busy machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
# Debian's chromium, driven by Playwright; never a browser download.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

CORPUS = [
    ("A man rides a bike.", "Ein Mann fährt Fahrrad."),
    ("Two dogs play in the snow.", "Zwei Hunde spielen im Schnee."),
    ("A woman is reading a book.", "Eine Frau liest ein Buch."),
    ("Children are playing soccer!", "Kinder spielen Fußball!"),
    ("The café opens at 9:30, doesn't it?", "Das Café öffnet um 9:30, nicht wahr?"),
    ("Über 100 Menschen laufen.", "Über 100 Menschen laufen."),
]


def tiny_config(**overrides):
    from core.config import TransformerConfig

    values = dict(vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    values.update(overrides)
    return TransformerConfig(**values)


def write_corpus(directory: Path, pairs, stem: str = "train") -> tuple[Path, Path]:
    source, target = directory / f"{stem}.src", directory / f"{stem}.tgt"
    source.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    target.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return source, target


@pytest.fixture(scope="session")
def tokenizer():
    from core.tokenizer import Tokenizer

    return Tokenizer.train([text for pair in CORPUS for text in pair] * 3, vocab_size=200, min_frequency=1)


def require_multi30k():
    if not MULTI30K.is_dir():
        pytest.skip(f"Multi30K data not found at {MULTI30K} (../shared is absent)")
    return MULTI30K


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def http_server(directory: Path, log_dir: Path):
    """``python -m http.server`` serving directory on a loopback port: yields its URL once it answers, stopped by
    PID."""
    import httpx

    port = free_port()
    log = (log_dir / "http.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(directory)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the static server did not start"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def pytest_collection_modifyitems(config, items):
    """Without torch installed, a test marked ``torch`` is skipped with the reason, not failed."""
    if HAS_TORCH:
        return
    skip = pytest.mark.skip(reason="needs torch: pip install torch==2.13.0 first (the train extra)")
    for item in items:
        if "torch" in item.keywords:
            item.add_marker(skip)


@contextmanager
def running_server(*flags: str):
    """``python -m serve http FLAGS`` on a free loopback port, ready: (url, process). Stopped by its PID."""
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "serve", "http", *flags, "--host", "127.0.0.1", "--port",
                                str(port), "--log-level", "warning"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                pytest.fail(f"server exited: {process.stdout.read()}")
            time.sleep(0.5)
        else:
            pytest.fail("server did not become ready in 60 s")
        yield url, process
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
