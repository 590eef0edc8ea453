"""serve/js: the Node test suite (`node --test`, parity with Python) and the example page in headless Chromium.

Both install the package's locked dependencies first when they are missing (`npm ci`, with onnxruntime-node's
download of GPU providers skipped: the machine has no internet besides the registries)."""

import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, free_port

JS = ROOT / "serve" / "js"


@pytest.fixture(scope="module")
def node_modules():
    assert shutil.which("node") and shutil.which("npm"), "Node 20 and npm are needed for serve/js"
    if not (JS / "node_modules" / "onnxruntime-web").is_dir():
        subprocess.run(["npm", "ci", "--onnxruntime-node-install=skip", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       timeout=900)
    return JS / "node_modules"


def test_node_suite_matches_python(node_modules):
    done = subprocess.run(["node", "--test", "test/"], cwd=JS, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "ATTENTION_MT_PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 6" in done.stdout


@pytest.fixture()
def static_server(node_modules, tmp_path):
    """The repository over HTTP on a loopback port (the page, the package and the bundles), stopped by PID."""
    port = free_port()
    log = (tmp_path / "http.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(ROOT)], stdout=log, stderr=subprocess.STDOUT)
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


def test_example_page_translates_in_the_browser_like_python(static_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from serve import Translator

    text = "A man in a blue jacket is riding his bicycle down a busy street."
    (expected,) = Translator(ROOT / "models" / "en-de" / "onnx").translate([text], beam_size=5, return_attention=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            outside, errors = [], []
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith((static_server, "data:", "blob:")) else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(static_server + "serve/js/example/index.html")
            expect(page.locator("#status")).to_have_text("ready", timeout=60_000)
            page.locator("#source").fill(text)
            page.locator("#translate").click()
            expect(page.locator("#translation")).to_have_text(expected.text, timeout=60_000)
            steps, sources = len(expected.attention.target_tokens), len(expected.attention.source_tokens)
            expect(page.locator("#attention rect.cell")).to_have_count(steps * sources)
            first = page.locator("#attention rect.cell title").first.text_content()
            weight = float(expected.attention.cross[-1, :, 0, 0].mean())
            assert first.endswith(f"{weight:.3f}"), (first, weight)
            page.screenshot(path=str(tmp_path / "js-example.png"), full_page=True)
            assert float(page.locator("#status").get_attribute("data-milliseconds")) > 0
            assert errors == [] and outside == [], (errors, outside)
        finally:
            browser.close()
