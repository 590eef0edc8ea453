"""``python -m bench.static_page``: the static inspector (python -m demo.static) against the Gradio demo, here.

Serves a freshly written static folder with ``python -m http.server`` on 127.0.0.1 and opens it in headless Chromium
(/usr/bin/chromium): the bytes the first visit downloads and a second visit's (the browser's cache), the time from
opening the page to the first translation shown, then the time per translation, greedy and beam 5 (a click to the
translation, every attention weight and the beam tree drawn). Then launches the Gradio demo (``python -m demo``) and
times the same sentences through its ``/translate`` API (gradio_client): the server's search, attention and beam
record, plus the HTTP round trip. Prints one JSON object. Timings on a shared CPU are noisy: run it on a quiet
machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SENTENCES = ["Zwei junge Kinder spielen auf dem Rasen mit einem roten Ball.",
             "Ein Mann in einer blauen Jacke fährt mit dem Fahrrad eine belebte Straße hinunter.",
             "Eine Frau mit Sonnenbrille liest am Strand ein Buch.",
             "Eine Gruppe von Männern spielt auf einem Feldweg Fußball.",
             "Zwei Hunde spielen im Schnee.",
             "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
             "Ein älterer Mann sitzt auf einer Parkbank und liest Zeitung.",
             "Drei Leute wandern einen felsigen Bergpfad hinauf."]
DIRECTION = "German → English"  # the page's first direction: the first visit downloads its model only


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in {seconds} s") from None
            time.sleep(0.3)


def summary(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values), 1), "min_ms": round(min(values), 1),
            "max_ms": round(max(values), 1), "runs": len(values)}


def measure_static(site: Path, sentences: list[str]) -> dict:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            transferred = {"bytes": 0, "requests": 0}

            def finished(event):
                transferred["bytes"] += event["encodedDataLength"]
                transferred["requests"] += 1

            cdp.on("Network.loadingFinished", finished)

            def visit() -> tuple[float, float]:
                started = time.perf_counter()
                page.goto(url)
                expect(page.locator("#direction")).to_have_value(DIRECTION)
                expect(page.locator("#state")).to_have_text("ready", timeout=300_000)
                ready = time.perf_counter()
                page.locator("#source").fill(sentences[0])
                page.locator("#beam").fill("5")
                page.locator("#translate").click()
                page.wait_for_function("Number(document.body.dataset.translations ?? 0) >= 1", timeout=300_000)
                return (ready - started) * 1000, (time.perf_counter() - started) * 1000

            ready_ms, first_ms = visit()
            first = dict(transferred)
            transferred.update(bytes=0, requests=0)
            cached_ready_ms, cached_first_ms = visit()
            second = dict(transferred)
            timings = {}
            for beam in (1, 5):
                page.locator("#beam").fill(str(beam))
                clicks, searches, attention = [], [], []
                for sentence in sentences:
                    count = int(page.evaluate("document.body.dataset.translations"))
                    page.locator("#source").fill(sentence)
                    started = time.perf_counter()
                    page.locator("#translate").click()
                    page.wait_for_function(f"Number(document.body.dataset.translations) > {count}", timeout=300_000)
                    clicks.append((time.perf_counter() - started) * 1000)
                    searches.append(float(page.locator("#timing").get_attribute("data-search-ms")))
                    attention.append(float(page.locator("#timing").get_attribute("data-attention-ms")))
                timings[f"beam{beam}"] = {"click_to_shown": summary(clicks), "search": summary(searches),
                                          "attention": summary(attention)}
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"first_visit": {"bytes": first["bytes"], "requests": first["requests"],
                            "ms_to_ready": round(ready_ms), "ms_to_first_translation": round(first_ms)},
            "second_visit": {"bytes": second["bytes"], "requests": second["requests"],
                             "ms_to_ready": round(cached_ready_ms), "ms_to_first_translation": round(cached_first_ms)},
            "per_translation": timings}


def measure_gradio(sentences: list[str]) -> dict:
    from gradio_client import Client

    port = free_port()
    started = time.perf_counter()
    app = subprocess.Popen([sys.executable, "-m", "demo", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, 300)
        client = Client(url, verbose=False)
        client.predict(sentences[0], DIRECTION, 5, api_name="/translate")
        first_ms = (time.perf_counter() - started) * 1000
        timings = {}
        for beam in (1, 5):
            values = []
            for sentence in sentences:
                start = time.perf_counter()
                client.predict(sentence, DIRECTION, beam, api_name="/translate")
                values.append((time.perf_counter() - start) * 1000)
            timings[f"beam{beam}"] = {"api_round_trip": summary(values)}
    finally:
        app.terminate()
        app.wait(timeout=30)
    return {"ms_from_process_start_to_first_translation": round(first_ms), "per_translation": timings}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.static_page", description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=len(SENTENCES), help="sentences per setting (at most 8)")
    parser.add_argument("--skip-gradio", action="store_true", help="time the static page only")
    args = parser.parse_args(argv)
    sentences = SENTENCES[: max(1, args.sentences)]
    with tempfile.TemporaryDirectory() as folder:
        from demo.static import write_static

        site = write_static(Path(folder) / "site")
        result = {"sentences": len(sentences), "direction": DIRECTION, "static": measure_static(site, sentences)}
    if not args.skip_gradio:
        result["gradio"] = measure_gradio(sentences)
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
