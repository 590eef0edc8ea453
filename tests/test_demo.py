"""demo/: the handlers alone, the worked example and the positional encoding against hand computations, and the
app launched on a loopback port and called through gradio_client."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, free_port
from demo import figures, handlers, lesson
from serve import Translator

BUNDLES = [ROOT / "models" / "en-de" / "onnx", ROOT / "models" / "de-en" / "onnx"]
EN_DE, DE_EN = "English → German", "German → English"


@pytest.fixture(scope="module")
def directions():
    return handlers.load_directions(BUNDLES)


def test_directions_are_named_by_the_manifests(directions):
    assert list(directions) == [EN_DE, DE_EN]
    assert handlers.find_bundles(ROOT / "models") == sorted(BUNDLES)
    with pytest.raises(FileNotFoundError, match="no exported bundles"):
        handlers.find_bundles(ROOT / "tests")
    with pytest.raises(ValueError, match="two bundles translate English → German"):
        handlers.load_directions([BUNDLES[0], BUNDLES[0]])


def test_translation_keeps_every_head_of_the_chosen_translation(directions):
    result = handlers.translate_text(directions, EN_DE, "Two dogs play in the snow.", beam_size=5)
    (reference,) = directions[EN_DE].translate(["Two dogs play in the snow."], beam_size=5, return_attention=True)
    assert result.text == reference.text and result.notices == ()
    attention = result.attention
    assert attention.target_tokens == reference.attention.target_tokens
    config = directions[EN_DE].config
    s, t = len(attention.source_tokens), len(attention.target_tokens)
    assert attention.encoder.shape == (config.n_encoder_layers, config.n_heads, s, s)
    assert attention.cross.shape == (config.n_decoder_layers, config.n_heads, t, s)
    np.testing.assert_array_equal(attention.cross, reference.attention.cross)
    np.testing.assert_allclose(handlers.attention_matrix(result, "cross", 2, handlers.MEAN),
                               attention.cross[1].mean(axis=0))
    np.testing.assert_array_equal(handlers.attention_matrix(result, "decoder", 3, "2"), attention.decoder[2, 1])


@pytest.mark.parametrize("direction, text, beam, message", [
    ("English → French", "A dog.", 5, "Unknown direction 'English → French'; choose one of: English → German"),
    (EN_DE, "", 5, "the input is empty"),
    (EN_DE, "   \n\t ", 5, "the input is empty"),
    (EN_DE, "A dog.", 0, "beam size must be a whole number from 1 to 8"),
    (EN_DE, "A dog.", 9, "beam size must be a whole number from 1 to 8"),
    (EN_DE, "A dog.", 2.5, "beam size must be a whole number"),
    (EN_DE, "A dog.", "5", "beam size must be a whole number"),
    (EN_DE, None, 5, "must be text"),
])
def test_bad_input_is_a_message_for_the_page(directions, direction, text, beam, message):
    with pytest.raises(handlers.DemoInputError, match=message):
        handlers.translate_text(directions, direction, text, beam)


def test_unknown_characters_and_typed_specials_are_reported_not_hidden(directions):
    emoji = handlers.translate_text(directions, EN_DE, "A dog 🙂🙂 runs.", 1)
    assert emoji.notices[0].startswith("2 characters of the input are unknown to the model")
    assert "<unk>" in emoji.attention.source_tokens
    assert "&lt;unk&gt;" in handlers.notices_markdown(emoji)  # Markdown would swallow a bare <unk>
    unknown_script = handlers.translate_text(directions, EN_DE, "猫が走る", 1)
    assert unknown_script.notices and unknown_script.attention.source_tokens.count("<unk>") >= 1
    typed = handlers.translate_text(directions, EN_DE, "A dog </s> runs.", 1)
    assert typed.notices == () and typed.attention.source_tokens.count("</s>") == 1  # only the real EOS
    assert "/" in typed.attention.source_tokens


def test_long_input_is_cut_to_the_demo_limit_with_a_notice(directions):
    long_text = "A man in a red shirt rides a bike down the road. " * 30
    result = handlers.translate_text(directions, EN_DE, long_text, 1)
    assert "the demo translates at most 128" in result.notices[0]
    assert len(result.attention.source_tokens) <= handlers.LIMITS.max_tokens + 1  # + </s>
    assert long_text.startswith(result.source) and long_text[len(result.source)] == " "  # cut before a word
    huge = handlers.translate_text(directions, EN_DE, "a" * 50_000, 1)
    assert huge.notices[0].startswith("The input has 50,000 characters; the demo reads the first 2,000")


def test_views_label_every_token_and_reject_missing_layers(directions):
    result = handlers.translate_text(directions, DE_EN, "Ein Hund und ein Hund spielen.", 3)
    views = handlers.attention_views(result, "encoder", 4, "3")
    heatmap = views.head_figure.data[0]
    tokens = result.attention.source_tokens
    assert list(heatmap.x) == list(heatmap.y) == [f"{i}·{t.replace('<', '&lt;').replace('>', '&gt;')}"
                                                  for i, t in enumerate(tokens, 1)]
    assert len(set(heatmap.x)) == len(tokens) and tokens.count("▁Hund") == 2  # repeated tokens keep their own row
    np.testing.assert_array_equal(np.asarray(heatmap.z), result.attention.encoder[3, 2])
    assert "layer 4 · head 3" in views.head_figure.layout.title.text
    grid = views.heads_figure.data
    assert len(grid) == result.attention.encoder.shape[1] + 1  # every head and the mean
    np.testing.assert_allclose(np.asarray(grid[-1].z), result.attention.encoder[3].mean(axis=0), rtol=1e-6)
    decoder = handlers.attention_views(result, "decoder", 1, handlers.MEAN).head_figure.data[0]
    assert list(decoder.y)[0] == "1·&lt;s&gt;"
    with pytest.raises(handlers.DemoInputError, match="Layer 5 does not exist; this model has 4"):
        handlers.attention_views(result, "cross", 5, handlers.MEAN)
    with pytest.raises(handlers.DemoInputError, match="Head 9 does not exist"):
        handlers.attention_views(result, "cross", 1, "9")
    with pytest.raises(handlers.DemoInputError, match="Unknown attention kind"):
        handlers.attention_views(result, "sideways", 1, "1")


def test_alignment_html_shades_sources_by_the_picked_step():
    cross = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], dtype=np.float32)
    page = figures.alignment_html(["▁Ein", "</s>"], ["▁A", "<b>", "</s>"], cross, caption="test", picked=1)
    assert page.count("class='tok tgt") == 2 and page.count("class='tok src'") == 3
    assert "data-weights='0.0500,0.0500,0.9000'" in page
    assert "rgba(37, 99, 235, 0.900)" in page and "&lt;b&gt;" in page and "<b>" not in page
    assert "class='tok tgt picked' data-step='1'" in page
    assert "Nothing to align" in figures.alignment_html([], [], np.zeros((0, 0)), caption="x")


def test_json_record_has_every_weight_and_old_files_are_removed(directions, tmp_path):
    result = handlers.translate_text(directions, EN_DE, "A girl jumps.", 2)
    stale = tmp_path / "translation-old.json"
    stale.write_text("{}")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    path = handlers.write_attention_json(result, tmp_path)
    assert not stale.exists() and path.parent == tmp_path
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["translation"] == result.text and record["settings"] == {"beam_size": 2}
    assert record["model"] == "en-de" and record["direction"] == EN_DE
    for kind in ("encoder", "decoder", "cross"):
        array = getattr(result.attention, kind)
        assert record["shapes"][kind] == list(array.shape)
        np.testing.assert_allclose(np.array(record["attention"][kind]), array, atol=5e-7)
    assert record["target_tokens"] == result.attention.target_tokens


def test_worked_example_against_a_hand_computation():
    # With identity projections Q = K = V = X, so every number can be checked by hand.
    identity = np.eye(3)
    example = lesson.self_attention_steps(identity, identity, identity)
    x = [[0.5, 0.2, 0.5], [0.5, 1.0, 0.6], [0.9, 1.1, 1.5]]  # E + P, added by hand
    np.testing.assert_allclose(example.inputs, x)
    np.testing.assert_allclose(example.scores[0], [0.54, 0.75, 1.42])  # 0.25+0.04+0.25, 0.25+0.2+0.3, 0.45+0.22+0.75
    np.testing.assert_allclose(example.scores[2, 2], 0.81 + 1.21 + 2.25)
    np.testing.assert_allclose(example.scaled_scores, example.scores / math.sqrt(3))
    row = [math.exp(s / math.sqrt(3)) for s in (0.54, 0.75, 1.42)]
    np.testing.assert_allclose(example.weights[0], [r / sum(row) for r in row])
    np.testing.assert_allclose(example.output[0], [sum(example.weights[0][k] * x[k][d] for k in range(3))
                                                   for d in range(3)])


def test_seeded_example_uses_plain_loops_results():
    example = lesson.worked_example(7)
    generator = np.random.default_rng(7)
    for drawn in (example.w_query, example.w_key, example.w_value):
        np.testing.assert_array_equal(drawn, generator.standard_normal((3, 3)))
    x = example.inputs
    q = [[sum(x[i][k] * example.w_query[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    k_ = [[sum(x[i][k] * example.w_key[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(example.query, q)
    scores = [[sum(q[i][d] * k_[j][d] for d in range(3)) / math.sqrt(3) for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(example.scaled_scores, scores)
    np.testing.assert_allclose(example.weights.sum(axis=1), 1.0)
    assert not np.allclose(lesson.worked_example(8).w_query, example.w_query)
    for bad in (-1, 2**32, 1.5, "3", True):
        with pytest.raises(ValueError, match="seed must be a whole number"):
            lesson.worked_example(bad)
    page, figure = handlers.worked_example_view(7)
    assert "QK^T / sqrt(d_k)" in page and f"{example.weights[0][0]:.3f}" in page
    np.testing.assert_array_equal(np.asarray(figure.data[0].z), example.weights)
    with pytest.raises(handlers.DemoInputError, match="The seed must be"):
        handlers.worked_example_view(-3)


def test_positional_encoding_plot_is_the_formula():
    figure = handlers.positional_encoding_view(20, 8)
    table = np.asarray(figure.data[0].z)
    assert table.shape == (20, 8)
    for pos in range(20):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)
    for length, d_model in ((0, 8), (20, 7), (600, 8), (20, 2048)):
        with pytest.raises(handlers.DemoInputError):
            handlers.positional_encoding_view(length, d_model)


def test_the_demo_never_imports_torch():
    code = ("import sys, demo.app, demo.handlers as h; "
            "h.translate_text(h.load_directions(h.find_bundles('models')), 'English → German', 'A dog.', 2); "
            "demo.app.build_demo(h.load_directions(h.find_bundles('models'))); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.fixture(scope="module")
def app_url(directions, tmp_path_factory):
    from demo.app import THEME, build_demo

    demo = build_demo(directions, export_dir=tmp_path_factory.mktemp("exports"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, theme=THEME)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_translate_through_gradio_client(app_url, directions):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/translate", "/worked_example", "/positional_encoding"} <= set(endpoints)
    text = "A little girl climbs into a wooden playhouse."
    translation, notices = client.predict(text, EN_DE, 4, api_name="/translate")
    assert translation == directions[EN_DE].translate([text], beam_size=4)[0].text and notices == ""
    translation, notices = client.predict("Ein Hund 🙂 rennt.", DE_EN, 1, api_name="/translate")
    assert translation == directions[DE_EN].translate(["Ein Hund 🙂 rennt."], beam_size=1)[0].text
    assert "1 character of the input is unknown" in notices
    with pytest.raises(Exception, match="Klingon → German is not in the list of choices"):
        client.predict("A dog.", "Klingon → German", 5, api_name="/translate")
    with pytest.raises(Exception, match="the input is empty"):
        client.predict("", EN_DE, 5, api_name="/translate")
    with pytest.raises(Exception, match="Value 12 is greater than maximum value 8"):
        client.predict("A dog.", EN_DE, 12, api_name="/translate")
    # the app still answers after refusing
    assert client.predict("A dog.", EN_DE, 1, api_name="/translate")[0]


def shading(page) -> np.ndarray:
    """The alpha of each source token's shade (the browser keeps alpha in steps of 1/255)."""
    colors = page.eval_on_selector_all("#alignment .src", "nodes => nodes.map(n => n.style.backgroundColor)")
    return np.array([float(color.rstrip(")").split(",")[3]) if color.startswith("rgba") else 1.0 for color in colors])


def test_the_page_in_a_real_browser(app_url, directions, tmp_path):
    """Chromium opens the page, translates, reads the heatmap labels, follows the alignment, downloads the JSON,
    and the page never asks the internet for anything."""
    from playwright.sync_api import expect, sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium (apt-get install chromium); see README"
    text = "Two young children are playing with a red ball on the grass."
    (reference,) = directions[EN_DE].translate([text], beam_size=5, return_attention=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            outside = []
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith((app_url, "data:", "blob:")) else None)
            page.goto(app_url)
            page.locator("#source textarea").fill(text)
            page.locator("#translate").click()
            expect(page.locator("#translation textarea")).to_have_value(reference.text, timeout=30_000)
            page.wait_for_selector("#head-plot .xtick", timeout=30_000)
            labels = page.locator("#head-plot .xtick").all_text_contents()
            assert labels == [f"{i}·{t}" for i, t in enumerate(reference.attention.source_tokens, 1)]
            assert "layer 1 · mean over heads" in page.locator("#head-plot .gtitle").text_content()

            # the alignment view: hovering an output token re-shades the source tokens with its weights
            outputs = page.locator("#alignment .tgt")
            assert outputs.count() == len(reference.attention.target_tokens)
            expected = reference.attention.cross[0].mean(axis=0)  # layer 1, mean over heads: [T, S]
            picked = shading(page)
            outputs.nth(3).hover()
            hovered = shading(page)
            np.testing.assert_allclose(picked, expected[0], atol=1 / 255 + 1e-3)
            np.testing.assert_allclose(hovered, expected[3], atol=1 / 255 + 1e-3)
            assert np.abs(hovered - picked).max() > 0.05
            page.mouse.move(5, 5)
            np.testing.assert_array_equal(shading(page), picked)  # leaving returns to the pinned step
            outputs.nth(3).click()
            page.mouse.move(5, 5)
            np.testing.assert_array_equal(shading(page), hovered)
            assert "picked" in outputs.nth(3).get_attribute("class")
            page.keyboard.press("ArrowRight")
            expect(page.locator("#alignment .alignment-status")).to_contain_text(
                f"step 5 of {len(reference.attention.target_tokens)}")

            page.screenshot(path=str(tmp_path / "demo-translate.png"), full_page=True)

            # another attention kind redraws the heatmap
            page.get_by_label("Encoder self-attention").check()
            expect(page.locator("#head-plot .gtitle")).to_contain_text("Encoder self-attention", timeout=30_000)

            with page.expect_download(timeout=30_000) as download:
                page.locator("#download").click()
            record = json.loads(open(download.value.path(), encoding="utf-8").read())
            assert record["translation"] == reference.text
            assert record["shapes"]["cross"] == list(reference.attention.cross.shape)

            page.get_by_role("tab", name="How attention works").click()
            weights = lesson.worked_example(0).weights
            expect(page.locator("#lesson")).to_contain_text(f"{weights[2][1]:.3f}")
            page.screenshot(path=str(tmp_path / "demo-lesson.png"), full_page=True)
            screenshots = os.environ.get("DEMO_SCREENSHOTS")
            if screenshots:  # how the README's pictures are made
                for name in ("demo-translate.png", "demo-lesson.png"):
                    (tmp_path / name).replace(os.path.join(screenshots, name))

            page.get_by_role("tab", name="Translate and inspect").click()
            page.locator("#source textarea").fill("   ")
            page.locator("#translate").click()
            expect(page.get_by_text("the input is empty")).to_be_visible(timeout=30_000)
            assert outside == [], f"the page fetched from outside: {outside}"
        finally:
            browser.close()
