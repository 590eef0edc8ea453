"""The static inspector (python -m demo.static): the folder it writes, and the page served by python -m http.server
in headless Chromium at 390 and 1280 px, checked against Python (serve.Translator) token for token and weight for
weight, with every request of the page watched."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, http_server
from core.bundle import sha256_of
from core.heads import HeadMask
from core.search import Hypothesis, attention_of
from serve.sentences import split_sentences, translate_paragraphs

GOLDEN = ROOT / "tests" / "golden"
SENTENCES = {"English → German": "Two young children are playing with a red ball on the grass.",
             "German → English": "Zwei junge Kinder spielen auf dem Rasen mit einem roten Ball."}
KINDS = ("encoder", "decoder", "cross")


def test_inspect_golden_file_is_what_python_does_now():
    spec = importlib.util.spec_from_file_location("make_inspect_golden", GOLDEN / "make_inspect_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dumps(module.golden()) == module.GOLDEN.read_text(encoding="utf-8"), (
        "tests/golden/inspect.json is stale: run python tests/golden/make_inspect_golden.py")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The folder python -m demo.static writes (npm ci first when serve/js's packages are missing)."""
    out = tmp_path_factory.mktemp("static") / "site"
    done = subprocess.run([sys.executable, "-m", "demo.static", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["out"] == str(out)
    return out


def test_the_folder_is_a_static_space_with_the_bundles_as_their_manifests_list_them(site):
    readme = (site / "README.md").read_text(encoding="utf-8")
    front = readme.split("---\n")[1]
    assert "sdk: static\n" in front and "app_file: index.html\n" in front and "license: gpl-2.0\n" in front
    settings = json.loads((site / "inspector.json").read_text(encoding="utf-8"))
    assert [d["label"] for d in settings["directions"]] == ["German → English", "English → German"]
    assert {d["precision"] for d in settings["directions"]} == {"float32"}  # the default: Python's tokens
    assert settings["limits"] == {"maxChars": 2000, "maxTokens": 128, "maxBeams": 8}  # the demo's (demo.handlers)
    for direction in settings["directions"]:
        folder = site / direction["bundle"]
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert sorted(p.name for p in folder.iterdir()) == sorted([*manifest["files"], "manifest.json"])
        for name, entry in manifest["files"].items():
            assert sha256_of(folder / name) == entry["sha256"], name
    lock = json.loads((ROOT / "serve" / "js" / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    for package in ("onnxruntime-web", "@huggingface/tokenizers"):
        vendored = json.loads((site / "vendor" / package / "package.json").read_text(encoding="utf-8"))
        assert vendored["version"] == lock[f"node_modules/{package}"]["version"]
    assert (site / settings["runtime"]["wasm"]).stat().st_size == settings["runtime"]["bytes"]
    assert (site / "js" / "translator.mjs").read_bytes() == (ROOT / "serve" / "js" / "translator.mjs").read_bytes()
    for text in (site / "index.html", site / "app.mjs", site / "views.mjs"):  # no CDN, no other host
        assert "https://" not in text.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", ""), text
    done = subprocess.run([sys.executable, "-m", "demo.static", "--out", str(site)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "exists and is not empty (use --force to replace it)" in done.stderr


@pytest.fixture(scope="module")
def site_url(site, tmp_path_factory):
    """python -m http.server in the written folder on a loopback port, stopped by PID."""
    with http_server(site, tmp_path_factory.mktemp("http")) as url:
        yield url


@pytest.fixture(scope="module")
def python_translators():
    from serve import Translator

    return {label: {precision: Translator(ROOT / "models" / pair / "onnx", workers=1, precision=precision)
                    for precision in ("int8", "float32")}
            for label, pair in (("English → German", "en-de"), ("German → English", "de-en"))}


def python_attention(translator, text: str, ids, finished: bool, heads_off=()):
    """Python's attention (core.search.attention_of) of text translated as ids, with heads_off."""
    source = translator.tokenizer.encode(text) + [translator.config.eos_id]
    mask = HeadMask.switched_off(list(heads_off), translator.config)
    (attention,) = attention_of(translator.backend, translator.tokenizer, [source],
                                [Hypothesis(tuple(ids), 0.0, 0.0, finished)], mask)
    return attention


CELLS = """() => { const rows = []; document.querySelectorAll('#heatmap rect.cell').forEach((cell) => {
    (rows[Number(cell.dataset.r)] ??= [])[Number(cell.dataset.c)] = Number(cell.dataset.w); }); return rows; }"""
HEATMAP = """() => { const map = document.querySelector('#heatmap svg');
  return {kind: map.dataset.kind, layer: Number(map.dataset.layer), head: map.dataset.head, rows: (%s)()}; }""" % CELLS
IDLE = "!document.querySelector('#translate').disabled"

CLIPPED = """() => [...document.querySelectorAll('button, select, input, textarea, label, p, li, h1, h2, h3, .scroll')]
  .filter((el) => el.offsetParent !== null && !el.parentElement.closest('.scroll'))  // inside a scroll box is no clip
  .filter((el) => { const box = el.getBoundingClientRect();
    return box.right > document.documentElement.clientWidth + 0.5 || box.left < -0.5
      || (el.tagName !== 'TEXTAREA' && !el.classList.contains('scroll') && el.scrollWidth > el.clientWidth + 1); })
  .map((el) => `${el.tagName}#${el.id} ${(el.textContent || '').slice(0, 40)}`)"""


def wait_translated(page, count: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.translations ?? 0) >= {count}", timeout=120_000)


def test_a_paragraph_translates_sentence_by_sentence_like_python(site_url, python_translators):
    """As on every other surface (serve.sentences): the sentences searched apart and joined, and a menu that picks
    the sentence whose attention the views show; on a phone, where a long menu entry could clip."""
    from playwright.sync_api import expect, sync_playwright

    label, text = "English → German", "A dog runs through the snow. Two men sit on a bench! Is the woman cold?"
    translator = python_translators[label]["float32"]
    (joined,) = translate_paragraphs(translator, [text], beam_size=5)
    sentences = split_sentences(text, "en")
    assert len(sentences) == 3
    (second,) = translator.translate([sentences[1]], beam_size=5, return_attention=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(site_url)
            expect(page.locator("#state")).to_have_text("ready", timeout=120_000)
            page.locator("#direction").select_option(label)
            expect(page.locator("#state")).to_have_text("ready", timeout=120_000)
            page.locator("#source").fill(text)
            page.locator("#beam").fill("5")
            page.locator("#translate").click()
            wait_translated(page, 1)
            assert page.locator("#translation").text_content() == joined.text
            expect(page.locator("#sentence option")).to_have_count(3)
            assert page.locator("#sentence-choice").is_visible()
            page.locator("#sentence").select_option("1")
            page.wait_for_function("document.body.dataset.sentence === '1'", timeout=60_000)
            page.locator("#kinds button[data-kind='cross']").click()
            page.locator("#grid g.head[data-layer='0'][data-head='0']").click()
            np.testing.assert_allclose(np.array(page.evaluate(HEATMAP)["rows"]), second.attention.cross[0, 0],
                                       atol=1e-5)
            assert page.evaluate(CLIPPED) == []
            page.locator("#source").fill(sentences[0])
            page.locator("#translate").click()
            wait_translated(page, 2)
            assert not page.locator("#sentence-choice").is_visible()  # one sentence: no menu
            assert errors == []
        finally:
            browser.close()


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_the_page_translates_and_shows_every_head_like_python(site_url, python_translators, width, height, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            outside, errors, seen = [], [], []
            page.on("request", lambda request: (seen.append(request.url), outside.append(request.url)
                    if not request.url.startswith((site_url, "data:", "blob:")) else None))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(site_url)
            expect(page.locator("#state")).to_have_text("ready", timeout=120_000)
            assert "runtime and sentence splitter (16.5 MB)" in page.locator("#download").text_content()
            assert page.locator("#files li").count() >= 7  # the runtime and each file the translator read
            translations = 0
            for label in ("English → German", "German → English"):
                page.locator("#direction").select_option(label)
                expect(page.locator("#state")).to_have_text("ready", timeout=120_000)
                text = SENTENCES[label]
                assert page.locator("#source").input_value() == text  # the direction's example sentence
                translator = python_translators[label]["float32"]
                for beam in (1, 5):
                    page.locator("#beam").fill(str(beam))
                    page.locator("#translate").click()
                    translations += 1
                    wait_translated(page, translations)
                    (expected,) = translator.translate([text], beam_size=beam)
                    assert page.locator("#translation").text_content() == expected.text, (label, beam)
                    assert page.locator("#confidence").get_attribute("data-label") == expected.confidence.label
            # every head of every kind, shown as Python computes it (the German → English beam-5 translation)
            (expected,) = translator.translate([text], beam_size=5, return_attention=True, record_beams=True)
            attention = expected.attention
            config = translator.config
            for kind in KINDS:
                page.locator(f"#kinds button[data-kind='{kind}']").click()
                heads = page.locator("#grid g.head")
                layers = getattr(attention, kind).shape[0]
                expect(heads).to_have_count(layers * (config.n_heads + 1))  # every head and each layer's mean
                for layer in range(layers):
                    for head in [*range(config.n_heads), "mean"]:
                        page.locator(f"#grid g.head[data-layer='{layer}'][data-head='{head}']").click()
                        shown = page.evaluate(HEATMAP)
                        assert (shown["kind"], shown["layer"], shown["head"]) == (kind, layer, str(head))
                        weights = getattr(attention, kind)[layer]
                        want = weights.mean(axis=0) if head == "mean" else weights[head]
                        np.testing.assert_allclose(np.array(shown["rows"]), want, atol=1e-5,
                                                   err_msg=f"{kind} {layer} {head}")
            lines = page.locator("#alignment line.link")
            expect(lines).to_have_count(int((attention.cross[layers - 1].mean(axis=0) >= 0.05).sum()))
            # heads off, with the keyboard: the search and the weights follow Python's heads_off
            off = ["cross.1.2", "encoder.0.3"]
            for name in off:
                page.locator(f"#heads-off input[value='{name}']").focus()
                page.keyboard.press("Space")
            page.wait_for_function(f"document.body.dataset.headsOff === {' '.join(off)!r} && {IDLE}", timeout=120_000)
            (switched,) = translator.translate([text], beam_size=5, heads_off=off, return_attention=True)
            assert page.locator("#translation").text_content() == switched.text
            page.locator("#kinds button[data-kind='cross']").click()
            page.locator("#grid g.head[data-layer='1'][data-head='2']").click()
            switched_head = page.locator("#grid g.head[data-layer='1'][data-head='2']")
            assert "switched off" in switched_head.get_attribute("aria-label")
            np.testing.assert_allclose(np.array(page.evaluate(HEATMAP)["rows"]), switched.attention.cross[1, 2],
                                       atol=1e-5)
            page.locator("#all-on").click()
            page.wait_for_function(f"document.body.dataset.headsOff === '' && {IDLE}", timeout=120_000)
            assert page.locator("#translation").text_content() == expected.text
            # the beam tree, walked with the keyboard: a node's partial hypothesis and its attention
            page.locator("#tree g.n[tabindex='0']").focus()
            for key in ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowLeft", "ArrowRight", "Enter"):
                page.keyboard.press(key)
            expect(page.locator("#node-view svg")).to_have_count(1, timeout=30_000)
            focused = page.evaluate("[document.activeElement.dataset.s, document.activeElement.dataset.i]")
            step, index = int(focused[0]), int(focused[1])
            assert (step, index) == (2, 0) or step == 2
            path = [node.token_id for node in expected.beams.path(step, index)]
            finished = path[-1] == config.eos_id
            ids = path[:-1] if finished else path
            node_attention = python_attention(python_translators[label]["float32"], text, ids, finished)
            partial = translator.tokenizer.decode(ids)
            assert f"Partial translation: “{partial}”" in page.locator("#node").text_content()
            node_rows = page.evaluate(CELLS.replace("#heatmap", "#node-view"))
            last_step = node_attention.cross[:, :, -1]  # [L, H, S]: the node's step, every layer and head
            np.testing.assert_allclose(np.array(node_rows), last_step.reshape(-1, last_step.shape[-1]), atol=1e-5)
            # every control is reached by Tab
            page.locator("#direction").focus()
            reached = set()
            for _ in range(120):
                reached.add(page.evaluate("""() => { const el = document.activeElement;
                  return el.closest('#grid') && 'grid' || el.closest('#heatmap') && 'heatmap'
                    || el.closest('#kinds') && 'kind' || el.closest('#heads-off') && 'switch'
                    || el.closest('#tree') && 'tree' || el.id || el.tagName; }"""))
                page.keyboard.press("Tab")
            assert {"direction", "beam", "source", "translate", "kind", "grid", "layer", "head", "heatmap", "switch",
                    "all-on", "tree"} <= reached, reached
            # nothing clipped: the page never scrolls sideways, wide drawings scroll in their own boxes
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.evaluate(CLIPPED) == []
            page.screenshot(path=str(tmp_path / f"static-{width}.png"), full_page=True)
            assert errors == [] and outside == [], (errors, outside)
            assert any(url.endswith(".wasm") for url in seen) and not any(url.endswith(".int8.onnx") for url in seen)
            # a second visit reads the runtime and the models from the browser's Cache Storage, not the server
            seen.clear()
            page.reload()
            expect(page.locator("#state")).to_have_text("ready", timeout=120_000)
            assert not [url for url in seen if url.endswith((".wasm", ".onnx", "tokenizer.json"))], seen
            assert any(url.endswith("manifest.json") for url in seen)  # always asked for: a new bundle is seen
            assert errors == [] and outside == [], (errors, outside)
        finally:
            browser.close()


def test_the_page_applies_the_input_policy(site_url, python_translators):
    from playwright.sync_api import expect, sync_playwright

    from demo.handlers import fit_source

    long = "Ein Hund läuft über die Wiese und ein Mann wirft einen Ball. " * 20  # 260 tokens: cut to 128
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(site_url)
            expect(page.locator("#state")).to_have_text("ready", timeout=120_000)
            translator = python_translators["German → English"]["float32"]
            page.locator("#source").fill(long)
            page.locator("#translate").click()
            expect(page.locator("#state")).to_have_text("done", timeout=120_000)
            source, notices = fit_source(translator, long)  # the demo's cut and notice
            # the cut text, sentence by sentence, as the demo translates it
            assert page.locator("#translation").text_content() == translate_paragraphs(translator, [source])[0].text
            cut = page.locator("#notices li").first.text_content()
            assert cut.startswith("⚠ The input has 260 subword tokens; the page translates at most 128, so it was cut to:")
            assert cut.endswith(source) and notices[0].startswith("The input has 260 subword tokens")
            for text, beam, message in (("", 5, "Type a sentence to translate (the input is empty)."),
                                        ("Ein Hund.", 0, "The beam size must be a whole number from 1 to 8, got 0."),
                                        ("Ein Hund.", 9, "The beam size must be a whole number from 1 to 8, got 9.")):
                page.locator("#source").fill(text)
                page.locator("#beam").fill(str(beam))
                page.locator("#beam").press("Enter")  # the keyboard submits the form
                expect(page.locator("#state")).to_have_text(message)
                assert page.locator("#result").is_hidden() and page.locator("#inside").is_hidden()
        finally:
            browser.close()


def test_int8_search_where_the_bundle_has_it(tmp_path):
    from demo.static import write_static

    out = write_static(tmp_path / "int8", [ROOT / "models" / "en-de" / "onnx"], precision="int8")
    (direction,) = json.loads((out / "inspector.json").read_text(encoding="utf-8"))["directions"]
    assert (direction["label"], direction["precision"]) == ("English → German", "int8")
    with pytest.raises(ValueError, match="precision must be float32 or int8, got 'int4'"):
        write_static(tmp_path / "int4", precision="int4")


@pytest.mark.parametrize("case", ["no webassembly", "a model file missing"])
def test_a_failed_load_is_one_clear_message(site_url, case):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            if case == "no webassembly":
                page.add_init_script("delete globalThis.WebAssembly")
                message = "This page needs WebAssembly, which this browser does not offer (or has switched off)."
            else:
                page.route("**/encoder.onnx", lambda route: route.fulfill(status=404, body="gone"))
                message = "The translator could not load: encoder.onnx is listed in the manifest but missing (404)"
            page.goto(site_url)
            expect(page.locator("#error")).to_be_visible(timeout=60_000)
            assert page.locator("#error").text_content().startswith(message.split(":")[0])
            if case != "no webassembly":
                assert page.locator("#error").text_content().startswith(message)
            assert page.locator("[role=alert]:visible").count() == 1
            assert page.locator("#translate").is_disabled()
            assert page.locator("body").get_attribute("data-state") == "failed"
        finally:
            browser.close()
