"""serve/js: the Node test suite (`node --test`, parity with Python) and the example page in headless Chromium.

Both install the package's locked dependencies first when they are missing (`npm ci`, with onnxruntime-node's
download of GPU providers skipped: the machine has no internet besides the registries)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, MULTI30K, ROOT, http_server
from core.data import read_lines

JS = ROOT / "serve" / "js"
GOLDEN = ROOT / "tests" / "golden"


def make_golden(script: str = "make_golden.py"):
    """A golden-file writer of tests/golden as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), GOLDEN / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["make_golden.py", "make_sentences_golden.py"])
def test_golden_file_is_what_python_does_now(script):
    module = make_golden(script)
    assert module.dumps(module.golden()) == module.GOLDEN.read_text(encoding="utf-8"), (
        f"{module.GOLDEN.relative_to(ROOT)} is stale: run python tests/golden/{script}")


@pytest.fixture(scope="module")
def node_modules():
    assert shutil.which("node") and shutil.which("npm"), "Node 20 and npm are needed for serve/js"
    if not all((JS / "node_modules" / package).is_dir() for package in ("onnxruntime-web", "sentencex-wasm")):
        subprocess.run(["npm", "ci", "--onnxruntime-node-install=skip", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       timeout=900)
    return JS / "node_modules"


def test_node_suite_matches_python(node_modules):
    done = subprocess.run(["node", "--test", "test/"], cwd=JS, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "ATTENTION_MT_PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = {name: int(count) for name, count in
               re.findall(r"^# (tests|pass|fail|skipped|todo|cancelled) (\d+)$", done.stdout, re.MULTILINE)}
    assert summary["tests"] > 0 and summary["pass"] == summary["tests"], summary  # every test ran and passed
    assert summary["fail"] == summary["skipped"] == summary["todo"] == summary["cancelled"] == 0, summary


@pytest.fixture()
def static_server(node_modules, tmp_path):
    """The repository over HTTP on a loopback port (the page, the package and the bundles), stopped by PID."""
    with http_server(ROOT, tmp_path) as url:
        yield url


BROWSER_TRANSLATE = """async ([pair, texts, beamSize]) => {
  const ort = await import("onnxruntime-web");
  const { Translator } = await import("/serve/js/translator.mjs");
  const translator = await Translator.load(new URL(`/models/${pair}/onnx/`, location.href), { ort });
  return (await translator.translate(texts, { beamSize })).map((result) => result.text);
}"""


BROWSER_GOLDEN = """async ([pair, texts, beamSize]) => {
  const ort = await import("onnxruntime-web");
  const { Translator } = await import("/serve/js/translator.mjs");
  const translator = await Translator.load(new URL(`/models/${pair}/onnx/`, location.href), { ort });
  return (await translator.translate(texts, { beamSize })).map((result) => [translator.tokenizer.encode(result.source),
    result.unknownCharacters, result.text]);
}"""


def browser_parity_sentences() -> dict[str, list[str]]:
    """Real sentences per shipped model: test_2016_flickr's first 40 when ../shared is here, else written ones."""
    written = {"en-de": ["Two dogs play in the snow.", "A woman with sunglasses is reading a book on the beach.",
                         "A group of men play soccer on a dirt field."],
               "de-en": ["Eine Frau mit Sonnenbrille sitzt auf einer Bank im Park.", "Ein Mann fährt Fahrrad.",
                         "Drei Männer arbeiten auf einer Baustelle neben der Straße."]}
    if not MULTI30K.is_dir():
        return written
    return {pair: read_lines(MULTI30K / f"test_2016_flickr.{pair[:2]}")[:40] for pair in written}


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
            weights = []  # every graph points into weights.bin: the page downloads it once
            page.on("request", lambda request: weights.append(request.url) if request.url.endswith(".bin") else None)
            page.goto(static_server + "serve/js/example/index.html")
            expect(page.locator("#status")).to_have_text("ready", timeout=60_000)
            assert weights == [static_server + "models/en-de/onnx/weights.bin"], weights
            page.locator("#source").fill(text)
            page.locator("#translate").click()
            expect(page.locator("#translation")).to_have_text(expected.text, timeout=60_000)
            steps, sources = len(expected.attention.target_tokens), len(expected.attention.source_tokens)
            expect(page.locator("#attention rect.cell")).to_have_count(steps * sources)
            first = page.locator("#attention rect.cell title").first.text_content()
            weight = float(expected.attention.cross[-1, :, 0, 0].mean())
            assert first.endswith(f"{weight:.3f}"), (first, weight)
            page.screenshot(path=str(tmp_path / "js-example.png"), full_page=True)
            for pair, texts in browser_parity_sentences().items():  # the browser build on more sentences
                translator = Translator(ROOT / "models" / pair / "onnx")
                for beam in (1, 5):
                    ours = page.evaluate(BROWSER_TRANSLATE, [pair, texts, beam])
                    assert ours == [t.text for t in translator.translate(texts, beam_size=beam)], (pair, beam)
            golden = json.loads((GOLDEN / "input_policy.json").read_text(encoding="utf-8"))
            rows = [row for row in golden["bundles"]["en-de"] if "error" not in row]  # the browser build, golden cases
            texts = [golden["cases"][row["case"]] for row in rows]
            expected = [[row["ids"], row["unknown_characters"], row["greedy"]] for row in rows]
            assert page.evaluate(BROWSER_GOLDEN, ["en-de", texts, 1]) == expected
            few = [i for i, row in enumerate(rows) if row["case"].startswith(("bom", "emoji", "combining", "chinese"))]
            beam = page.evaluate(BROWSER_GOLDEN, ["en-de", [texts[i] for i in few], 5])
            assert [text for _, _, text in beam] == [rows[i]["beam5"] for i in few]
            assert float(page.locator("#status").get_attribute("data-milliseconds")) > 0
            assert errors == [] and outside == [], (errors, outside)
        finally:
            browser.close()
