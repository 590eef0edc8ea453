"""demo/: the handlers alone, the worked example and the positional encoding against hand computations, and the
app launched on a loopback port and called through gradio_client."""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, free_port
from demo import figures, handlers, lesson
from demo import inside as look
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
    assert "`<unk>`" in handlers.notices_markdown(emoji)  # a code span: Markdown would swallow a bare <unk>
    unknown_script = handlers.translate_text(directions, EN_DE, "猫が走る", 1)
    assert unknown_script.notices and unknown_script.attention.source_tokens.count("<unk>") >= 1
    typed = handlers.translate_text(directions, EN_DE, "A dog </s> runs.", 1)
    assert typed.notices == () and typed.attention.source_tokens.count("</s>") == 1  # only the real EOS
    assert "/" in typed.attention.source_tokens


# What a visitor types, echoed back where the page renders Markdown: blank lines would end a code span, and the rest
# would render as a heading, a link and an image fetched from another host (203.0.113.9 is TEST-NET-3: never reached).
INJECTION = ("A dog runs.\n\n# heading\n\n[link](http://203.0.113.9/x)\n\n<img src=http://203.0.113.9/x.png>\r\n\r\n"
             + "A dog runs on the grass. " * 30)
INJECTED_START = "Ein Hund\n\n# Kopf\n\n[Link](http://203.0.113.9/y)\n\n<img src=http://203.0.113.9/y.png>"


def rendered(markdown: str) -> str:
    """The HTML a CommonMark renderer (with tables, as Gradio's) makes of markdown."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_typed_text_echoed_back_is_never_markup(directions):
    result = handlers.translate_text(directions, EN_DE, INJECTION, 1)
    assert "cut to: " in result.notices[0]
    page = rendered(handlers.notices_markdown(result))
    assert "<h1" not in page and "<a " not in page and "<img" not in page, page
    assert "&lt;img src=http://203.0.113.9/x.png&gt;" in page and "# heading" in page
    found = look.what_if(directions, result, 1, None, INJECTED_START, "1", handlers.MEAN)
    page = rendered(f"Decoded on from {found.start}.\n\n{found.table}")
    assert "<h1" not in page and "<a " not in page and "<img" not in page, page
    assert page.count("<code>") >= 2 and "<table>" in page
    for text in ("`` `a` ``\n\n# b", "x\r\r<img src=y>", "\n\n\n", "|\n\n|"):
        page = rendered(handlers.code_span(text))
        assert page.startswith("<p><code>") and page.count("<p>") == 1 and "<img" not in page, (text, page)


FIVE_CAPTIONS = ("Two young children are playing with a red ball on the grass. A man in a blue jacket is riding his "
                 "bicycle down a busy street. A woman with sunglasses sits on a bench in the park. Three men are "
                 "working on a construction site next to the road. A brown dog jumps over a log in the forest.")


def test_a_paragraph_translates_sentence_by_sentence(directions):
    from serve.sentences import split_sentences

    sentences = split_sentences(FIVE_CAPTIONS, "en")
    assert len(sentences) == 5 and " ".join(sentences) == FIVE_CAPTIONS
    paragraph = handlers.translate_paragraph(directions, EN_DE, FIVE_CAPTIONS, 5)
    expected = [t.text for t in directions[EN_DE].translate(sentences, beam_size=5)]
    assert [sentence.text for sentence in paragraph.sentences] == expected
    assert paragraph.text == " ".join(expected) and paragraph.text.count(".") == 5
    assert [sentence.source for sentence in paragraph.sentences] == sentences
    assert paragraph.notices[0].startswith("The text was translated as 5 sentences")
    lowest = min(sentence.confidence.score for sentence in paragraph.sentences)
    assert handlers.confidence_text(paragraph).endswith(f"(confidence {lowest:.2f}: sentence "
                                                        f"{[s.confidence.score for s in paragraph.sentences].index(lowest) + 1}, "
                                                        "the lowest of 5)")
    whole = directions[EN_DE].translate([FIVE_CAPTIONS], beam_size=5)[0].text
    assert whole.count(".") < 5  # what the model does with the paragraph at once: sentences lost
    one = handlers.translate_paragraph(directions, EN_DE, "A dog.", 5)
    assert len(one.sentences) == 1 and one.notices == () and handlers.confidence_text(one) == \
        handlers.confidence_text(one.sentences[0])
    assert split_sentences(" \n\n ") == [] and split_sentences("Dr. Smith sees a dog. Mr. Brown too.", "en") == [
        "Dr. Smith sees a dog.", "Mr. Brown too."]
    with pytest.raises(handlers.DemoInputError, match="the input is empty"):
        handlers.translate_paragraph(directions, EN_DE, " \n\n ", 5)


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


@pytest.mark.parametrize("direction, text, label", [
    (EN_DE, "Two young children are playing with a red ball on the grass.", "in_domain"),
    (DE_EN, "Eine Frau mit Sonnenbrille sitzt auf einer Bank im Park.", "in_domain"),
    (EN_DE, "The committee postponed the vote on the budget until next year.", "out_of_domain"),
    (EN_DE, "Ein Hund rennt über eine grüne Wiese.", "out_of_domain"),  # the wrong language for this direction
    (EN_DE, "<s></s><pad>", "out_of_domain"),
    (DE_EN, "Das führt zu nichts.", "out_of_domain"),
])
def test_each_translation_says_whether_it_is_probably_wrong(directions, direction, text, label):
    result = handlers.translate_text(directions, direction, text, 5)
    assert result.confidence.label == label
    message = handlers.confidence_text(result)
    assert message.startswith("✓ Looks like the training data" if label == "in_domain"
                              else "⚠ Outside what this model knows: treat with care")


def test_alignment_html_shades_sources_by_the_picked_step():
    cross = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], dtype=np.float32)
    page = figures.alignment_html(["▁Ein", "</s>"], ["▁A", "<b>", "</s>"], cross, caption="test", picked=1)
    assert page.count("class='tok tgt") == 2 and page.count("class='tok src'") == 3
    assert "data-weights='0.0500,0.0500,0.9000'" in page
    assert "rgba(var(--alignment-rgb), 0.900)" in page and "&lt;b&gt;" in page and "<b>" not in page
    assert "class='tok tgt picked' tabindex='-1' data-step='1'" in page
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
    from demo.app import CSS, THEME, build_demo

    demo = build_demo(directions, export_dir=tmp_path_factory.mktemp("exports"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, theme=THEME, css=CSS)
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
    translation, confidence, notices = client.predict(text, EN_DE, 4, api_name="/translate")
    assert translation == directions[EN_DE].translate([text], beam_size=4)[0].text and notices == ""
    paragraph, _, notices = client.predict(FIVE_CAPTIONS, EN_DE, 5, api_name="/translate")
    assert paragraph == handlers.translate_paragraph(directions, EN_DE, FIVE_CAPTIONS, 5).text
    assert paragraph.count(".") == 5 and "translated as 5 sentences" in notices
    assert re.fullmatch(r"✓ Looks like the training data \(confidence [01]\.\d\d\)", confidence), confidence
    translation, _, notices = client.predict("Ein Hund 🙂 rennt.", DE_EN, 1, api_name="/translate")
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


def test_the_api_names_its_outputs_and_notices_are_plain_text(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/translate"]
    assert [value["label"] for value in endpoint["returns"]] == ["Translation", "Confidence", "Notices"]
    _, _, notices = client.predict("A dog <b>runs</b> 🙂.", EN_DE, 1, api_name="/translate")
    assert "`<unk>`" in notices and "&lt;" not in notices


def run_demo(*flags, timeout=60):
    return subprocess.run([sys.executable, "-m", "demo", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_command_line_mistakes_are_one_line_errors_naming_the_flag(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_demo("--port", str(port))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and f"--port {port}" in done.stderr
    assert "choose another --port" in done.stderr and "Traceback" not in done.stderr
    done = run_demo("--port", "99999")
    assert done.returncode == 2 and "argument --port: must be a TCP port number" in done.stderr
    done = run_demo("--model", str(tmp_path / "missing"), "--port", str(free_port()))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and "--model" in done.stderr
    from demo.app import build_parser
    from demo.space import build_parser as space_parser

    for parser in (build_parser(), space_parser()):
        assert all(action.help for action in parser._actions), [a.option_strings for a in parser._actions if not a.help]


def test_the_banner_points_to_the_share_flag():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "demo", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "the demo runs on" in line:
                break
        assert "add --share for a temporary public gradio.live link" in lines[-1], lines
        assert not any("share=True" in line for line in lines), lines
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def shading(page) -> np.ndarray:
    """The alpha of each source token's shade (the browser keeps alpha in steps of 1/255)."""
    colors = page.eval_on_selector_all("#alignment .src",
                                       "nodes => nodes.map(n => getComputedStyle(n).backgroundColor)")
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
            page = browser.new_page(viewport={"width": 1280, "height": 800})
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
                f"output 5 of {len(reference.attention.target_tokens)}")

            page.screenshot(path=str(tmp_path / "demo-translate.png"), full_page=True)

            # another attention kind redraws the heatmap
            page.locator("#kind").get_by_label("Encoder self-attention").check()
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
            keep_screenshots(tmp_path, "demo-translate.png", "demo-lesson.png")

            page.get_by_role("tab", name="Translate").click()
            page.locator("#source textarea").fill("   ")
            page.locator("#translate").click()
            expect(page.get_by_text("the input is empty")).to_be_visible(timeout=30_000)
            assert outside == [], f"the page fetched from outside: {outside}"
        finally:
            browser.close()


def keep_screenshots(folder, *names):
    """DEMO_SCREENSHOTS=docs: how the pictures of the README and docs/ are made."""
    screenshots = os.environ.get("DEMO_SCREENSHOTS")
    if screenshots:
        for name in names:
            (folder / name).replace(os.path.join(screenshots, name))


def boxes(page, selector: str) -> list[tuple[float, float, float, float]]:
    """(left, top, right, bottom) of every element the selector finds, in page pixels."""
    return [tuple(box) for box in page.eval_on_selector_all(selector, """nodes => nodes.map(node => {
        const r = node.getBoundingClientRect();
        return [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY]; })""")]


def inside(box, outer, slack: float = 1.0) -> bool:
    return (box[0] >= outer[0] - slack and box[1] >= outer[1] - slack and box[2] <= outer[2] + slack
            and box[3] <= outer[3] + slack)


def overlap(a, b) -> bool:
    return a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5


def assert_apart(found: list, what: str) -> None:
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            assert not overlap(a, b), f"{what} overlap: {a} {b}"


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_the_page_fits_and_every_control_responds(app_url, directions, tmp_path, width, height):
    """At a phone's and a desktop's width: nothing is cut off or overlapping (element boxes), every alignment token
    is reachable, both tabs are visible, Enter translates, an example translates when clicked, an error leaves no
    stale result, the alignment follows the attention kind, and the lesson's controls answer Enter and arrow keys."""
    from playwright.sync_api import expect, sync_playwright

    long_text = " and ".join(["A brown dog jumps over a log in the forest while two children play with a red ball on "
                              "the grass"] * 3) + "."  # one long sentence
    (reference,) = directions[EN_DE].translate([handlers.fit_source(directions[EN_DE], long_text)[0]], beam_size=5,
                                               return_attention=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(app_url)
            for name in ("Translate", "How attention works"):  # both tabs in view, none behind a "…" menu
                tab = page.get_by_role("tab", name=name)
                expect(tab).to_be_visible()
                assert inside(boxes(page, f"button[role=tab]:has-text('{name}')")[0], (0, 0, width, 10_000))

            source = page.locator("#source textarea")
            source.fill(long_text)
            source.press("Enter")  # Enter translates (Shift+Enter would start a new line)
            expect(page.locator("#translation textarea")).to_have_value(reference.text, timeout=30_000)
            expect(page.locator("#confidence textarea")).to_have_value(re.compile("^✓ Looks like the training data"))
            page.wait_for_selector("#head-plot .xtick", timeout=30_000)
            assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing pushes the page sideways

            # the alignment view wraps: every token inside its box, and every output token reachable
            (view,) = boxes(page, "#alignment .alignment")
            tokens = boxes(page, "#alignment .tok")
            assert len(tokens) == len(reference.attention.target_tokens) + len(reference.attention.source_tokens)
            assert all(inside(token, (view[0], 0, view[2], 1e9)) for token in tokens), (view, tokens)
            outputs = page.locator("#alignment .tgt")
            for step in (0, len(reference.attention.target_tokens) // 2, len(reference.attention.target_tokens) - 1):
                outputs.nth(step).click()  # a tap on a phone
                expect(page.locator("#alignment .alignment-status")).to_contain_text(
                    f"{step + 1} of {len(reference.attention.target_tokens)}")

            # the heatmap: its title inside the figure, one label per source token, no two labels on each other
            figure = boxes(page, "#head-plot .main-svg")[0]
            assert all(inside(title, figure) for title in boxes(page, "#head-plot .gtitle"))
            ticks = boxes(page, "#head-plot .xtick text")
            assert len(ticks) == len(reference.attention.source_tokens)
            assert_apart(ticks, "heatmap labels")
            assert_apart(boxes(page, "#heads-plot .annotation"), "head titles")
            page.screenshot(path=str(tmp_path / f"demo-{width}.png"), full_page=True)
            page.locator("#alignment").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / f"demo-{width}-attention.png"))  # what a visitor sees there

            # another kind: the alignment view follows it
            page.locator("#kind").get_by_label("Encoder self-attention").check()
            expect(page.locator("#alignment .alignment-label").first).to_have_text("source token", timeout=30_000)

            # an error leaves no stale result behind; an example translates when clicked
            source.fill("   ")
            page.locator("#translate").click()
            expect(page.get_by_text("the input is empty").first).to_be_visible(timeout=30_000)
            expect(page.locator("#translation textarea")).to_have_value("")
            expect(page.locator("#confidence textarea")).to_have_value("")
            expect(page.locator("#alignment")).to_contain_text("Nothing translated")
            example = "I have no time today."
            page.get_by_text(example).first.click()
            expected = directions[EN_DE].translate([example], beam_size=5)[0].text
            expect(page.locator("#translation textarea")).to_have_value(expected, timeout=30_000)

            # the lesson: Enter and arrow keys redraw; the figure's parts keep to themselves
            page.get_by_role("tab", name="How attention works").click()
            positions = page.locator("#pe-length input[type=number]")
            positions.fill("200")
            positions.press("Enter")
            expect(page.locator("#pe-plot .gtitle")).to_contain_text("200 positions", timeout=30_000)
            page.locator("#pe-length input[type=range]").press("ArrowRight")
            expect(page.locator("#pe-plot .gtitle")).to_contain_text("201 positions", timeout=30_000)
            pe_figure = boxes(page, "#pe-plot .main-svg")[0]
            (colorbar,) = boxes(page, "#pe-plot .colorbar")
            (legend,) = boxes(page, "#pe-plot .legend")
            lines = boxes(page, "#pe-plot .subplot.x2y2 .gridlayer")[0]
            parts = [colorbar, legend, lines, *boxes(page, "#pe-plot .annotation"),
                     *boxes(page, "#pe-plot .g-xtitle, #pe-plot .g-x2title")]
            assert all(inside(part, pe_figure) for part in parts), (pe_figure, parts)
            assert_apart(parts, "positional-encoding figure parts")
            seed = page.locator("#seed input")
            seed.fill("-5")
            seed.press("Enter")
            expect(page.locator(".toast-body")).to_have_count(1, timeout=30_000)  # one message, not two
            expect(page.locator(".toast-body")).to_contain_text("whole number from 0 to")
            page.screenshot(path=str(tmp_path / f"demo-lesson-{width}.png"), full_page=True)
            keep_screenshots(tmp_path, f"demo-{width}-attention.png")
        finally:
            browser.close()


# Look inside: the beam tree, a node's attention, what if, rollout, two sentences side by side.

SEES = "The man sees the woman."


@pytest.fixture(scope="module")
def sees(directions):
    return handlers.translate_text(directions, EN_DE, SEES, 5)


def test_rollout_against_a_hand_computation():
    # Two layers, two heads, two tokens: every step by hand.
    weights = np.array([[[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]],   # layer 1: mean [[.5, .5], [.5, .5]]
                        [[[0.8, 0.2], [0.0, 1.0]], [[0.6, 0.4], [0.2, 0.8]]]])  # layer 2: mean [[.7, .3], [.1, .9]]
    # plus the identity, rows renormalized: layer 1 [[.75, .25], [.25, .75]], layer 2 [[.85, .15], [.05, .95]]
    first = [[0.75, 0.25], [0.25, 0.75]]
    second = [[0.85 * 0.75 + 0.15 * 0.25, 0.85 * 0.25 + 0.15 * 0.75],
              [0.05 * 0.75 + 0.95 * 0.25, 0.05 * 0.25 + 0.95 * 0.75]]  # layer 2 · layer 1
    rollout = handlers.attention_rollout(weights)
    np.testing.assert_allclose(rollout, [first, second])
    np.testing.assert_allclose(second, [[0.675, 0.325], [0.275, 0.725]])
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0)
    assert handlers.attention_rollout(np.zeros((3, 2, 0, 0))).shape == (3, 0, 0)


def test_rollout_is_an_option_of_the_encoder_view(sees):
    views = handlers.attention_views(sees, "encoder", 3, "2", rollout=True)
    rollout = handlers.attention_rollout(sees.attention.encoder)
    np.testing.assert_allclose(np.asarray(views.head_figure.data[0].z), rollout[2])
    assert "Encoder attention rollout<br>through layer 3" in views.head_figure.layout.title.text
    assert [trace.name for trace in views.heads_figure.data] == [f"through layer {n}" for n in range(1, 5)]
    assert "data-weights='" + ",".join(f"{w:.4f}" for w in rollout[2][0]) + "'" in views.alignment_html
    with pytest.raises(handlers.DemoInputError, match="Rollout is an option of the encoder"):
        handlers.attention_views(sees, "cross", 1, handlers.MEAN, rollout=True)


def test_the_beam_tree_draws_every_candidate_and_marks_the_translation(directions, sees):
    from demo import beamtree

    record = sees.beams
    page = look.beam_tree_view(directions, sees)
    nodes = re.findall(r"<g class='n ([a-z ]+)' data-s='(\d+)' data-i='(\d+)'", page)
    assert len(nodes) == sum(len(step) for step in record.steps)
    chosen = {(int(s), int(i)) for classes, s, i in nodes if "chosen" in classes.split()}
    assert chosen == beamtree.chosen_nodes(record) and len(chosen) == len(sees.attention.target_tokens)
    path = [record.steps[s][i] for s, i in sorted(chosen)]
    assert [directions[EN_DE].tokenizer.id_to_token(n.token_id) for n in path] == sees.attention.target_tokens
    for classes, s, i in nodes:
        assert record.steps[int(s)][int(i)].status in classes.split()
    assert page.count("tabindex='0'") == 1  # one entry for Tab; the arrow keys do the rest
    assert "aria-label='step 1, candidate 1: ▁Der; token log-prob" in page and "&lt;/s&gt;" in page
    assert len(page) < 60_000  # a short sentence at beam 5; the limits bound the longest (see docs/look-look.md)
    assert "Nothing to draw" in beamtree.beam_tree_html(type(record)((), ()), str)


def test_a_node_shows_the_attention_of_its_partial_hypothesis(directions, sees):
    end_step, end_index = sees.beams.hypotheses[0]  # the translation's own last node (the search went on)
    last = look.chosen_indices(sees)
    assert len(last) == end_step + 1 and last[-1] == end_index
    whole = look.partial_hypothesis(directions, sees, end_step + 1, end_index + 1)
    assert whole.attention.target_tokens == sees.attention.target_tokens
    np.testing.assert_allclose(whole.attention.cross, sees.attention.cross, atol=1e-6)
    middle = look.partial_hypothesis(directions, sees, 3, last[2] + 1)
    assert middle.attention.target_tokens == sees.attention.target_tokens[:3]
    np.testing.assert_allclose(middle.attention.cross, sees.attention.cross[:, :, :3], atol=1e-5)  # causal decoder
    pruned = next(i for i, node in enumerate(sees.beams.steps[2]) if node.status == "pruned")
    other = look.partial_hypothesis(directions, sees, 3, pruned + 1)
    path = sees.beams.path(2, pruned)
    assert other.score == pytest.approx(path[-1].log_prob) and len(other.attention.target_tokens) == 3
    assert other.hypothesis.token_log_probs == tuple(node.token_log_prob for node in path)
    assert "step 3, candidate" in look.node_summary(other, 3, pruned + 1)
    typed = look.partial_hypothesis(directions, sees, " 3", 2.0)  # digits typed into a menu, a whole float
    assert typed.hypothesis.token_log_probs == tuple(node.token_log_prob for node in sees.beams.path(2, 1))
    for step, index, message in ((99, 1, "Step 99 does not exist; this search has"), (1, 40, "has 10 candidates"),
                                 (1.5, 1, "step must be a whole number"), (1, None, "candidate must be a whole")):
        with pytest.raises(handlers.DemoInputError, match=message):
            look.partial_hypothesis(directions, sees, step, index)


def test_what_if_decodes_on_from_another_candidate_or_a_typed_start(directions, sees):
    choices = look.candidate_choices(directions, sees, 3)
    tokens = [token for _, token in choices]
    assert sees.attention.target_tokens[2] in tokens and "</s>" not in tokens
    alternative = look.first_alternative(sees, 3, choices)
    assert alternative == tokens[0] if tokens[0] != sees.attention.target_tokens[2] else tokens[1]
    found = look.what_if(directions, sees, 3, alternative, "", "2", "1")
    prefix = sees.attention.target_tokens[:2] + [alternative]
    (reference,) = directions[EN_DE].translate([SEES], beam_size=5, target_prefix=[prefix], return_attention=True)
    assert found.result.text == reference.text and found.result.attention.target_tokens[:3] == prefix
    rows = found.table.splitlines()
    assert rows[0] == "| # | before | log p | after | log p |"
    before, after = sees.hypothesis.token_log_probs[0], found.result.hypothesis.token_log_probs[0]
    assert rows[2] == f"| 1 | ` ▁Der ` | {before:.2f} | ` ▁Der ` | {after:.2f} |"
    assert f"**` {alternative} `**" in rows[4] and rows[-1].startswith("| | **total** |")
    shared = min(len(sees.attention.target_tokens), len(reference.attention.target_tokens))
    np.testing.assert_allclose(np.asarray(found.difference.data[0].z),
                               reference.attention.cross[1, 0, :shared] - sees.attention.cross[1, 0, :shared],
                               atol=1e-6)
    assert list(found.difference.data[0].y)[2] == f"3·{sees.attention.target_tokens[2]}→{alternative}"
    typed = look.what_if(directions, sees, 3, alternative, "Die Frau", "1", handlers.MEAN)
    assert typed.result.text.startswith("Die Frau") and typed.start == "` Die Frau `"
    for position, candidate, text, message in (
            (3, "▁Katze", "", "'▁Katze' is not a candidate at position 3"),
            (3, None, " ", "Choose a candidate token, or type the start"),
            (40, "▁Der", "", "Position 40 does not exist"),
            (3, None, "sehr " * 40, "The start has 40 tokens; the translation of this text has at most 22"),
            (3, None, "x" * 2001, "The typed start has 2,001 characters")):
        with pytest.raises(handlers.DemoInputError, match=re.escape(message)):
            look.what_if(directions, sees, position, candidate, text, "1", handlers.MEAN)


def test_two_sentences_side_by_side_share_one_view_and_scale(directions):
    first, second = look.compare(directions, EN_DE, *look.COMPARE_EXAMPLE, 5)
    assert (first.text, second.text) == tuple(t.text for t in directions[EN_DE].translate(
        list(look.COMPARE_EXAMPLE), beam_size=5))
    left, right = look.compare_views(first, second, "decoder", 2, "3")
    np.testing.assert_array_equal(np.asarray(left.data[0].z), first.attention.decoder[1, 2])
    np.testing.assert_array_equal(np.asarray(right.data[0].z), second.attention.decoder[1, 2])
    top = max(first.attention.decoder[1, 2].max(), second.attention.decoder[1, 2].max())
    assert left.data[0].zmax == right.data[0].zmax == pytest.approx(top)
    left, _ = look.compare_views(first, second, "encoder", 4, handlers.MEAN, rollout=True)
    np.testing.assert_allclose(np.asarray(left.data[0].z), handlers.attention_rollout(first.attention.encoder)[3])
    with pytest.raises(handlers.DemoInputError, match="the input is empty"):
        look.compare(directions, EN_DE, "A dog.", "", 5)


def test_look_inside_through_gradio_client(app_url, directions):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/beam_node", "/whole_translation", "/what_if", "/compare"} <= set(endpoints)
    assert [p["label"] for p in endpoints["/what_if"]["parameters"]] == [
        "Position", "Candidate", "…or type the start of the translation", "Layer", "Head"]
    with pytest.raises(Exception, match="Translate a sentence first"):
        client.predict(1, 1, api_name="/beam_node")
    client.predict(SEES, EN_DE, 5, api_name="/translate")  # the session keeps the translation for what follows
    sees = handlers.translate_text(directions, EN_DE, SEES, 5)
    summary = client.predict(3, 2, api_name="/beam_node")
    path = sees.beams.path(2, 1)
    assert summary.startswith("Showing the attention of step 3, candidate 2:") and f"{path[-1].log_prob:.2f}" in summary
    assert client.predict(api_name="/whole_translation") == ""
    with pytest.raises(Exception, match="Step 99 does not exist"):
        client.predict(99, 1, api_name="/beam_node")
    candidate = look.first_alternative(sees, 3, look.candidate_choices(directions, sees, 3))
    text, table, plot = client.predict(3, candidate, "", "1", handlers.MEAN, api_name="/what_if")
    assert text == look.what_if(directions, sees, 3, candidate, "", "1", handlers.MEAN).result.text
    assert "| # | before | log p | after | log p |" in table and plot
    text, _, _ = client.predict(1, None, "Eine Frau", "1", handlers.MEAN, api_name="/what_if")
    assert text.startswith("Eine Frau")
    with pytest.raises(Exception, match="is not a candidate at position 3"):
        client.predict(3, "▁Katze", "", "1", handlers.MEAN, api_name="/what_if")
    first, second, left, right = client.predict(*look.COMPARE_EXAMPLE, EN_DE, 5, "encoder", "2", handlers.MEAN,
                                                True, api_name="/compare")
    assert (first, second) == tuple(t.text for t in directions[EN_DE].translate(list(look.COMPARE_EXAMPLE),
                                                                               beam_size=5))
    assert left and right
    with pytest.raises(Exception, match="the input is empty"):
        client.predict("", "A dog.", EN_DE, 5, "cross", "1", handlers.MEAN, False, api_name="/compare")


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_look_inside_in_a_real_browser(app_url, directions, tmp_path, width, height):
    """The beam tree (tap, hover, keyboard), a node's attention and back, the rollout switch, what if (a candidate
    from the menu), two sentences side by side and an error for a start too long: every control answers, and
    nothing leaves the page or its box, at a phone's and a desktop's width."""
    from playwright.sync_api import expect, sync_playwright

    sees = handlers.translate_text(directions, EN_DE, SEES, 5)
    record, tokens = sees.beams, sees.attention.target_tokens
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(app_url)
            source = page.locator("#source textarea")
            source.fill(SEES)
            source.press("Enter")
            expect(page.locator("#translation textarea")).to_have_value(sees.text, timeout=30_000)
            page.wait_for_selector("#head-plot .xtick", timeout=30_000)

            # the tree: every candidate, the translation's path marked, the box inside the page and scrolling
            nodes = page.locator("#beam-tree g.n[data-s]")
            expect(nodes).to_have_count(sum(len(step) for step in record.steps))
            expect(page.locator("#beam-tree g.n.chosen[data-s]")).to_have_count(len(tokens))
            (scroll,) = boxes(page, "#beam-tree .beam-scroll")
            assert inside(scroll, (0, 0, width, 1e9)), scroll
            status = page.locator("#beam-tree .beam-status")
            pruned = next(i for i, node in enumerate(record.steps[2]) if node.status == "pruned")
            node = page.locator(f"#beam-tree g.n[data-s='2'][data-i='{pruned}']")
            node.hover()
            expect(status).to_contain_text(f"step 3, candidate {pruned + 1}:")
            expect(status).to_contain_text("pruned")
            node.click()  # a tap on a phone: the scores, and the attention of that partial hypothesis
            expect(page.locator("#node-status")).to_contain_text(f"step 3, candidate {pruned + 1}", timeout=30_000)
            expect(page.locator("#head-plot .ytick")).to_have_count(3, timeout=30_000)
            assert "selected" in node.get_attribute("class")

            # the keyboard: Tab's entry is the first node of the translation; → its child, Enter selects
            page.locator("#beam-tree g.n[tabindex='0']").focus()
            page.keyboard.press("ArrowRight")
            assert page.evaluate("document.activeElement.dataset.s") == "1"
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            expect(page.locator("#node-status")).to_contain_text("step 2, candidate 2", timeout=30_000)
            expect(page.locator("#head-plot .ytick")).to_have_count(2, timeout=30_000)

            # rollout: the encoder view's switch, with the head menu idle (here for the node just chosen)
            expect(page.locator("#rollout")).to_be_hidden()
            page.locator("#kind").get_by_label("Encoder self-attention").check()
            page.locator("#rollout input").check()
            expect(page.locator("#head-plot .gtitle")).to_contain_text("Encoder attention rollout", timeout=30_000)
            expect(page.locator("#head input")).to_be_disabled()
            assert inside(boxes(page, "#rollout")[0], (0, 0, width, 1e9))
            page.locator("#beam-search").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / f"look-inside-{width}-beams.png"))

            # back to the whole translation
            page.locator("#kind").get_by_label("Encoder–decoder (cross) attention").check()
            expect(page.locator("#head-plot .ytick")).to_have_count(2, timeout=30_000)
            page.locator("#whole").click()
            expect(page.locator("#head-plot .ytick")).to_have_count(len(tokens), timeout=30_000)
            expect(page.locator("#node-status")).to_have_text("")
            expect(page.locator("#beam-tree g.n.selected")).to_have_count(0)  # no node claims to be shown

            # what if: another candidate at position 3, decoded on
            page.locator("#what-if").get_by_text("What if").first.click()
            page.locator("#what-if-position input").click()
            page.get_by_role("option", name=f"3 · {tokens[2]}").click()
            alternative = look.first_alternative(sees, 3, look.candidate_choices(directions, sees, 3))
            expect(page.locator("#what-if-candidate input")).to_have_value(re.compile(f"^{alternative} "))
            page.locator("#what-if-run").click()
            expected = look.what_if(directions, sees, 3, alternative, "", "1", handlers.MEAN).result.text
            expect(page.locator("#what-if-translation textarea")).to_have_value(expected, timeout=30_000)
            page.wait_for_selector("#what-if-plot .ytick", timeout=30_000)
            (table,) = boxes(page, "#what-if-table table")
            assert inside(table, (0, 0, width, 1e9)), table
            figure = boxes(page, "#what-if-plot .main-svg")[0]
            assert all(inside(title, figure) for title in boxes(page, "#what-if-plot .gtitle"))
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.locator("#what-if").screenshot(path=str(tmp_path / f"look-inside-{width}-what-if.png"))

            # two sentences side by side (stacked on a phone), one view for both
            page.locator("#compare").get_by_text("Two sentences side by side").first.click()
            page.locator("#compare-run").click()
            first, second = (t.text for t in directions[EN_DE].translate(list(look.COMPARE_EXAMPLE), beam_size=5))
            expect(page.locator("#compare-translation-a textarea")).to_have_value(first, timeout=30_000)
            expect(page.locator("#compare-translation-b textarea")).to_have_value(second, timeout=30_000)
            page.locator("#compare-kind").get_by_label("Encoder self-attention").check()
            for plot in ("a", "b"):
                expect(page.locator(f"#compare-plot-{plot} .gtitle")).to_contain_text("Encoder self-attention",
                                                                                      timeout=30_000)
            left, right = (boxes(page, f"#compare-plot-{plot} .main-svg")[0] for plot in ("a", "b"))
            assert all(inside(box, (0, 0, width, 1e9)) for box in (left, right)), (left, right)
            side_by_side = abs(left[1] - right[1]) < 1 and left[2] <= right[0]
            assert side_by_side == (width > 700), (left, right)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.locator("#compare").screenshot(path=str(tmp_path / f"look-inside-{width}-compare.png"))
            keep_screenshots(tmp_path, *(f"look-inside-{width}-{view}.png" for view in ("beams", "what-if", "compare")))

            # a start the model cannot take: one message, and no stale what-if left under it
            page.locator("#what-if-typed textarea").fill("sehr " * 40)
            page.locator("#what-if-run").click()
            expect(page.locator(".toast-body")).to_contain_text("The start has 40 tokens", timeout=30_000)
            expect(page.locator("#what-if-translation textarea")).to_have_value("")
        finally:
            browser.close()


# ---- Look inside (issue #26): open a cell, heads off ------------------------------------------------------------

SENTENCE = "Two young children are playing with a red ball on the grass."


@pytest.fixture(scope="module")
def children(directions):
    return handlers.translate_text(directions, EN_DE, SENTENCE, 5)


@pytest.mark.parametrize("kind", ["encoder", "decoder", "cross"])
def test_an_open_cell_is_the_models_own_computation(directions, children, kind):
    from demo import heads

    (traced,) = directions[EN_DE].translate([SENTENCE], beam_size=5, return_trace=True)
    trace = traced.trace.of(kind)
    cell, kept = heads.open_cell(directions, children, kind, "2", "3", 4, 2)
    heatmap = np.asarray(handlers.attention_views(children, kind, 2, "3").head_figure.data[0].z)
    np.testing.assert_allclose(cell.weights, heatmap[3], atol=1e-5)  # the softmax row is the heatmap's row
    assert cell.weights.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(cell.x, trace.inputs[1, 3])
    np.testing.assert_array_equal(cell.q, trace.queries[1, 2, 3])
    np.testing.assert_array_equal(cell.keys, trace.keys[1, 2])
    np.testing.assert_array_equal(cell.values, trace.values[1, 2])
    np.testing.assert_allclose(cell.scaled, cell.scores / math.sqrt(32))
    np.testing.assert_allclose(cell.weights @ cell.values, cell.output, atol=1e-5)  # the head's output
    np.testing.assert_array_equal(cell.share, trace.head_outputs[1, 2, 3])
    if kind == "decoder":  # causal: nothing after the query's own step
        assert np.isneginf(cell.scores[4:]).all() and not cell.weights[4:].any()
    again, reused = heads.open_cell(directions, children, kind, 2, 3, 1, 1, kept)
    assert reused is kept and again.query == 0  # another cell of the same head: no re-run
    assert heads.open_cell(directions, children, kind, 2, 4, 1, 1, kept)[1] is not kept
    page = heads.cell_html(cell)
    assert "first 8 of 128" in page and "first 8 of 32" in page and "<th>d9</th>" not in page
    assert "class='marked'" in page and f"{cell.weights[1]:.4f}" in page
    assert "<th>d32</th>" in heads.cell_html(cell, all_dimensions=True)


@pytest.mark.parametrize("kind, layer, head, query, key, message", [
    ("cross", "5", "1", 1, 1, "Layer 5 does not exist; this model has 4 layers (1–4)."),
    ("cross", "1", "5", 1, 1, "Head 5 does not exist; this model has 4 heads per layer (1–4)."),
    ("cross", "1", handlers.MEAN, 1, 1, "The heatmap shows the mean over heads; choose one head"),
    ("cross", "1", "1", 0, 1, "Query 0 does not exist; this heatmap has 13 rows (1–13)."),
    ("encoder", "1", "1", 1, 15, "Key 15 does not exist; this heatmap has 14 columns (1–14)."),
    ("cross", "1", "1", 2.5, 1, "Query 2.5 does not exist"),
    ("cross", "1", "1", None, 1, "Choose a query from 1 to 13."),
    ("sideways", "1", "1", 1, 1, "Unknown attention kind 'sideways'"),
])
def test_cell_mistakes_are_one_line_messages(directions, children, kind, layer, head, query, key, message):
    from demo import heads

    with pytest.raises(handlers.DemoInputError, match=re.escape(message)) as error:
        heads.open_cell(directions, children, kind, layer, head, query, key)
    assert "\n" not in str(error.value)
    with pytest.raises(handlers.DemoInputError, match="Translate a sentence first"):
        heads.open_cell(directions, None, "cross", "1", "1", 1, 1)


def test_heads_off_translates_again_and_says_what_changed(directions, children):
    from demo import heads

    off = ["cross.2.1", "cross.3.2", "encoder.0.1"]
    view = heads.heads_off_view(directions, children, off)
    (reference,) = directions[EN_DE].translate([SENTENCE], beam_size=5, return_attention=True, heads_off=off)
    assert view.changed.text == reference.text and view.original is children
    assert view.changed.hypothesis.token_log_probs == reference.hypotheses[0].token_log_probs
    np.testing.assert_array_equal(view.changed.attention.cross, reference.attention.cross)
    page = heads.heads_off_html(view)
    assert "cross-attention L3 H2, cross-attention L4 H3, encoder self-attention L1 H2" in page
    assert f"{children.hypothesis.token_log_probs[0]:.3f}" in page
    assert f"{reference.hypotheses[0].token_log_probs[0]:.3f}" in page
    figure = heads.heads_off_figure(view, "cross", "1", handlers.MEAN)
    assert "heads off · layer 1 · mean over heads" in figure.layout.title.text
    np.testing.assert_allclose(np.asarray(figure.data[0].z), reference.attention.cross[0].mean(axis=0), rtol=1e-6)
    assert heads.heads_off_view(directions, children, []).changed.text == children.text  # all on: the same
    assert [value for _, value in heads.head_choices(directions[EN_DE].config, "decoder")][:2] == [
        "decoder.0.0", "decoder.0.1"]
    with pytest.raises(handlers.DemoInputError, match="Head 'cross.4.0': cross layer must be an integer from 0 to 3"):
        heads.heads_off_view(directions, children, ["cross.4.0"])
    with pytest.raises(handlers.DemoInputError, match="Translate a sentence first"):
        heads.heads_off_view(directions, None, [])


def test_which_heads_matter_measures_each_head_alone(directions, children):
    from demo import heads

    calls = []
    effects = heads.head_effects(directions, children, lambda done, total: calls.append((done, total)))
    assert calls == [(n, 48) for n in range(1, 49)] and effects.passes == 49
    tokens = children.attention.target_tokens[:-1]  # the translation without </s>
    assert effects.tokens == tokens
    assert effects.log_prob == pytest.approx(sum(children.hypothesis.token_log_probs[:-1]), abs=1e-4)
    assert {kind: changes.shape for kind, changes in effects.changes.items()} == {
        "encoder": (4, 4), "decoder": (4, 4), "cross": (4, 4)}
    (alone,) = directions[EN_DE].translate([SENTENCE], beam_size=1, target_prefix=[tokens],
                                           max_length=len(tokens) + 1, heads_off=[("cross", 3, 2)])
    assert effects.changes["cross"][3, 2] == pytest.approx(
        sum(alone.hypotheses[0].token_log_probs[:len(tokens)]) - effects.log_prob, abs=1e-6)
    figure, summary = heads.head_effects_view(effects)
    assert [trace.name for trace in figure.data] == ["encoder self", "decoder self", "cross"]
    np.testing.assert_array_equal(np.asarray(figure.data[2].z), effects.changes["cross"])
    assert "49 teacher-forced passes in" in summary and " ms." in summary
    same = heads.heads_off_html(heads.heads_off_view(directions, children, []))  # one log P for one translation
    assert f"{effects.log_prob:.3f} without it as <b>Which heads matter?</b> scores it" in same
    with pytest.raises(handlers.DemoInputError, match="Translate a sentence first"):
        heads.head_effects(directions, None)


def test_single_head_views_through_gradio_client(app_url, directions, children):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/open_cell", "/heads_off", "/which_heads_matter"} <= set(endpoints)
    with pytest.raises(Exception, match="Translate a sentence first"):
        client.predict("cross", "1", "1", 1, 1, False, api_name="/open_cell")
    client.predict(SENTENCE, EN_DE, 5, api_name="/translate")  # the session's translation
    page = client.predict("cross", "2", "3", 4, 2, False, api_name="/open_cell")
    assert "query 4 (▁spielen)" in page and f"{children.attention.cross[1, 2, 3, 1]:.4f}" in page
    with pytest.raises(Exception, match=re.escape("Query 99 does not exist; this heatmap has 13 rows (1–13).")):
        client.predict("cross", "2", "3", 99, 2, False, api_name="/open_cell")
    comparison, _ = client.predict(["cross.3.2"], [], [], "cross", "1", handlers.MEAN, api_name="/heads_off")
    (reference,) = directions[EN_DE].translate([SENTENCE], beam_size=5, heads_off=["cross.3.2"])
    assert "cross-attention L4 H3" in comparison and reference.text in comparison
    _, summary = client.predict(api_name="/which_heads_matter")
    assert "49 teacher-forced passes" in summary


def open_accordion(page, label: str, content: str) -> None:
    """Click an accordion's label until its content shows (a click during a redraw of the page can miss)."""
    from playwright.sync_api import expect

    for _ in range(3):
        page.get_by_text(label).click()
        try:
            expect(page.locator(content)).to_be_visible(timeout=10_000)
            return
        except AssertionError:
            continue
    expect(page.locator(content)).to_be_visible()


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_single_heads_in_a_browser(app_url, directions, tmp_path, width, height):
    """Open a cell (a click on the heatmap opens it, the keyboard picks query and key, it follows the heatmap's
    head), switch heads off and back on, measure which heads matter, follow the lesson's link to the same steps in
    the real model, and a row out of range is one message; nothing cut off, nothing pushes the page sideways, at a
    phone's and a desktop's width."""
    from playwright.sync_api import expect, sync_playwright

    from demo.app import LESSON_SENTENCE

    (reference,) = directions[EN_DE].translate([SENTENCE], beam_size=5, return_attention=True)
    (switched,) = directions[EN_DE].translate([SENTENCE], beam_size=5, heads_off=["cross.3.2"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(app_url)
            page.locator("#source textarea").fill(SENTENCE)
            page.locator("#source textarea").press("Enter")
            expect(page.locator("#translation textarea")).to_have_value(reference.text, timeout=30_000)
            page.wait_for_selector("#head-plot .xtick", timeout=30_000)

            # open a cell by clicking the heatmap of head 2 (the view opens itself), then by keyboard
            cell = page.locator("#cell-view")
            page.locator("#head input").click()
            page.get_by_role("option", name="head 2").click()
            expect(page.locator("#head-plot .gtitle")).to_contain_text("layer 1 · head 2", timeout=30_000)
            cells = page.locator("#head-plot .nsewdrag").first  # the heatmap's cells fill the plot area
            cells.scroll_into_view_if_needed()
            area = cells.bounding_box()
            rows, columns = len(reference.attention.target_tokens), len(reference.attention.source_tokens)
            page.mouse.click(area["x"] + 2.5 * area["width"] / columns, area["y"] + 1.5 * area["height"] / rows)
            expect(cell).to_contain_text("Cross-attention, layer 1, head 2: query 2 (▁kleine) gives key 3 "
                                         "(▁children)", timeout=30_000)
            expect(page.locator("#cell-query input")).to_have_value("2")
            softmax = [float(text) for text in cell.locator("table").nth(4).locator("tbody tr td:nth-child(4)")
                       .all_text_contents()]
            np.testing.assert_allclose(softmax, reference.attention.cross[0, 1, 1], atol=6e-5)  # the heatmap row
            query = page.locator("#cell-query input")
            query.fill("3")
            query.press("Enter")
            expect(cell).to_contain_text("query 3 (▁Kinder) gives key 3", timeout=30_000)
            page.locator("#cell-key input").press("ArrowUp")
            expect(cell).to_contain_text("gives key 4 (▁are) the weight "
                                         f"{reference.attention.cross[0, 1, 2, 3]:.4f}", timeout=30_000)
            page.locator("#cell-all input").check()
            expect(cell.locator("th", has_text="d32").first).to_be_visible(timeout=30_000)
            page.locator("#cell-all input").uncheck()
            expect(cell.locator("th", has_text="d32")).to_have_count(0, timeout=30_000)
            page.locator("#head input").click()
            page.get_by_role("option", name="mean of heads").click()  # the cell view follows the heatmap
            expect(cell).to_contain_text("The heatmap shows the mean over heads; choose one head", timeout=30_000)
            page.locator("#head input").click()
            page.get_by_role("option", name="head 2").click()
            expect(cell).to_contain_text("head 2: query 3 (▁Kinder) gives key 4", timeout=30_000)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            (view,) = boxes(page, "#cell-view")
            assert all(inside(box, (view[0], 0, view[2], 1e9)) for box in boxes(page, "#cell-view .scroll"))
            assert all(inside(box, (0, 0, width, 1e9)) for box in boxes(page, "#cell-query, #cell-key, #cell-all"))
            page.locator("#cell-accordion").screenshot(path=str(tmp_path / f"demo-cell-{width}.png"))

            # heads off: tick a head, translate again, compare; which heads matter; all on unticks every switch
            open_accordion(page, "Heads off: switch heads off and translate again", "#off-cross")
            page.locator("#off-cross").get_by_label("L4 H3").check()
            page.locator("#heads-off-run").click()
            result = page.locator("#heads-off-result")
            expect(result).to_contain_text("Heads off: cross-attention L4 H3.", timeout=30_000)
            expect(result).to_contain_text(switched.text)
            expect(page.locator("#heads-off-plot .gtitle")).to_contain_text("heads off · layer 1", timeout=30_000)
            assert all(inside(box, (0, 0, width, 1e9)) for box in boxes(page, "#heads-off-plot .gtitle"))
            page.locator("#heads-matter").click()
            expect(page.locator("#heads-matter-summary")).to_contain_text("49 teacher-forced passes", timeout=60_000)
            page.wait_for_selector("#heads-matter-plot .annotation", timeout=30_000)
            figure = boxes(page, "#heads-matter-plot .main-svg")[0]
            titles = boxes(page, "#heads-matter-plot .annotation, #heads-matter-plot .gtitle")
            assert len(titles) == 4 and all(inside(title, figure) for title in titles), (figure, titles)
            assert_apart(titles, "heads-matter titles")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.locator("#heads-accordion").screenshot(path=str(tmp_path / f"demo-heads-{width}.png"))
            page.locator("#heads-all-on").click()
            expect(page.locator("#heads-accordion input[type=checkbox]:checked")).to_have_count(0, timeout=30_000)
            assert page.locator("#heads-accordion input[type=checkbox]").count() == 48

            # the lesson's link: the worked example's sentence, its encoder self-attention, layer 1, head 1, cell (1, 1)
            page.get_by_role("tab", name="How attention works").click()
            page.locator("#real-model").click()
            lesson_translation = directions[EN_DE].translate([LESSON_SENTENCE], beam_size=5)[0].text
            expect(page.locator("#translation textarea")).to_have_value(lesson_translation, timeout=30_000)
            expect(cell).to_contain_text("Encoder self-attention, layer 1, head 1: query 1 (▁Trans", timeout=30_000)
            expect(page.locator("#head-plot .gtitle")).to_contain_text("layer 1 · head 1")
            rows = len(directions[EN_DE].translate([LESSON_SENTENCE], beam_size=5)[0].source_tokens)
            query.fill("99")  # out of range: one message
            query.press("Enter")
            expect(page.locator(".toast-body")).to_have_count(1, timeout=30_000)
            expect(page.locator(".toast-body")).to_contain_text(
                f"Query 99 does not exist; this heatmap has {rows} rows (1–{rows}).")
            keep_screenshots(tmp_path, f"demo-cell-{width}.png", f"demo-heads-{width}.png")
        finally:
            browser.close()


# ---- Issue #35: the longest input in every view, typed text never rendered, no stale views -------------------------

LONGEST = "A brown dog jumps over a log in the forest while two children play with a red ball on the grass and " * 20
# One sentence (no blank line: that would end the sentence) carrying markup, cut to the demo's 128 tokens.
INJECTION_LINE = ("A dog runs # heading [link](http://203.0.113.9/x) <img src=http://203.0.113.9/x.png> "
                  + "and a dog runs on the grass " * 30)


def figure_in_its_box(page, selector: str, width: int) -> dict:
    """Where a plotly figure lies in its box: the box inside the page, every text of the figure inside the figure,
    the colour bar in view before any scrolling, and a figure wider than its box scrolled (scrollLeft moves)."""
    found = page.evaluate("""(selector) => {
      const box = document.querySelector(selector), svg = box.querySelector('.main-svg');
      const rect = (node) => { const r = node.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
      box.scrollLeft = 0;
      const at = {box: rect(box), svg: rect(svg), client: box.clientWidth, scroll: box.scrollWidth,
                  overflow: getComputedStyle(box).overflowX,
                  texts: [...box.querySelectorAll('.main-svg text')].filter((t) => t.textContent.trim()).map(rect),
                  colorbars: [...box.querySelectorAll('.main-svg .colorbar')].map(rect)};
      box.scrollLeft = 10_000;
      at.moved = box.scrollLeft;
      box.scrollLeft = 0;
      return at; }""", selector)
    assert inside(found["box"], (0, -1e9, width, 1e9)), (selector, found["box"])
    cut = [text for text in found["texts"] if not inside(text, found["svg"])]
    assert not cut, (selector, "text outside its figure", found["svg"], cut)
    visible = (found["box"][0], -1e9, found["box"][0] + found["client"], 1e9)
    assert all(inside(bar, visible) for bar in found["colorbars"]), (selector, found["colorbars"], visible)
    assert found["texts"] and found["colorbars"], (selector, "no figure drawn")
    if found["svg"][2] - found["svg"][0] > found["client"] + 1:  # wider than its box: a visitor can scroll to its end
        assert found["overflow"] in ("auto", "scroll"), (selector, found["overflow"])
        assert found["scroll"] > found["client"] and found["moved"] >= found["scroll"] - found["client"] - 1, (
            selector, found)
    else:
        assert found["moved"] == 0, (selector, found)
    return found


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_the_longest_input_in_every_view(app_url, directions, tmp_path, width, height):
    """The longest input the limits allow (cut to 128 tokens), carrying a heading, a link and an image in its text:
    every figure (the head, every head, what if, heads off, both compared) fits or scrolls sideways in its own box
    with its labels and its colour bar in view, nothing pushes the page sideways, the echoed text renders no heading,
    link or image, and the page asks no other host for anything."""
    from playwright.sync_api import expect, sync_playwright

    result = handlers.translate_text(directions, EN_DE, INJECTION_LINE, 5)
    assert len(result.attention.source_tokens) > handlers.LIMITS.max_tokens - 5  # cut before a word: about the most
    assert len(handlers.translate_paragraph(directions, EN_DE, INJECTION_LINE, 5).sentences) == 1
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            outside = []
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith((app_url, "data:", "blob:")) else None)
            page.goto(app_url)
            page.locator("#source textarea").fill(INJECTION_LINE)
            page.locator("#translate").click()
            expect(page.locator("#translation textarea")).to_have_value(result.text, timeout=60_000)
            expect(page.locator("#notices code")).to_contain_text("# heading [link](http://203.0.113.9/x) <img")
            page.wait_for_selector("#head-plot .xtick", timeout=30_000)
            expect(page.locator("#head-plot .xtick")).to_have_count(len(result.attention.source_tokens))
            head = figure_in_its_box(page, "#head-plot", width)
            assert head["moved"] > 0  # 129 columns never fit
            page.locator("#head-plot").screenshot(path=str(tmp_path / f"demo-{width}-long.png"))
            assert_apart(boxes(page, "#head-plot .ytick text"), "heatmap rows")
            figure_in_its_box(page, "#heads-plot", width)

            page.locator("#what-if").get_by_text("What if").first.click()
            page.locator("#what-if-typed textarea").fill(INJECTED_START)
            page.locator("#what-if-run").click()
            expect(page.locator("#what-if-table code").first).to_contain_text("Ein Hund # Kopf", timeout=60_000)
            page.wait_for_selector("#what-if-plot .xtick", timeout=30_000)
            assert figure_in_its_box(page, "#what-if-plot", width)["moved"] > 0

            open_accordion(page, "Heads off: switch heads off and translate again", "#off-cross")
            page.locator("#off-cross").get_by_label("L4 H3").check()
            page.locator("#heads-off-run").click()
            page.wait_for_selector("#heads-off-plot .xtick", timeout=60_000)
            assert figure_in_its_box(page, "#heads-off-plot", width)["moved"] > 0

            page.locator("#compare").get_by_text("Two sentences side by side").first.click()
            for name in "ab":
                page.locator(f"#compare-source-{name} textarea").fill(LONGEST)
            page.locator("#compare-run").click()
            for name in "ab":
                page.wait_for_selector(f"#compare-plot-{name} .xtick", timeout=60_000)
                assert figure_in_its_box(page, f"#compare-plot-{name}", width)["moved"] > 0

            for rendered_here in ("#notices", "#what-if-table", "#node-status"):
                assert page.locator(f"{rendered_here} :is(h1, h2, a, img)").count() == 0, rendered_here
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert outside == [], f"the page fetched from outside: {outside}"
            keep_screenshots(tmp_path, *[f"demo-{width}-long.png"] * (width == 390))
        finally:
            browser.close()


def test_a_cell_opens_on_what_the_views_show_through_gradio_client(app_url, directions, sees):
    """After a node is chosen, the cell belongs to that node's partial hypothesis (its rows, its weights) and says
    so; after the whole translation is shown again, to the translation."""
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    client.predict(SEES, EN_DE, 5, api_name="/translate")
    node = look.partial_hypothesis(directions, sees, 3, 2)
    client.predict(3, 2, api_name="/beam_node")
    page = client.predict("cross", "2", "1", 3, 2, False, api_name="/open_cell")
    assert "The heatmap of step 3, candidate 2 of the beam search" in page
    assert f"the weight <b>{node.attention.cross[1, 0, 2, 1]:.4f}</b>" in page
    with pytest.raises(Exception, match=re.escape("Query 4 does not exist; this heatmap has 3 rows (1–3).")):
        client.predict("cross", "2", "1", 4, 2, False, api_name="/open_cell")
    client.predict(api_name="/whole_translation")
    page = client.predict("cross", "2", "1", 4, 2, False, api_name="/open_cell")
    assert "The heatmap of the whole translation." in page
    assert f"the weight <b>{sees.attention.cross[1, 0, 3, 1]:.4f}</b>" in page


def test_no_view_outlives_its_translation(app_url, directions):
    """One source of truth for the views: a new translation, an error and a refused request (a full queue answers
    503) clear or redraw every dependent view (heads off, which heads matter, the cell, the tree, the heatmaps);
    the cell follows a node chosen in the tree and says what it shows; a cell out of range leaves no cell behind;
    and no error badge outlives the next translation."""
    from playwright.sync_api import expect, sync_playwright

    second = "I have no time today."
    (first_result,) = directions[EN_DE].translate([SENTENCE], beam_size=5, return_attention=True)
    (second_result,) = directions[EN_DE].translate([second], beam_size=5, return_attention=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(app_url)
            source, translation = page.locator("#source textarea"), page.locator("#translation textarea")
            cell, comparison = page.locator("#cell-view"), page.locator("#heads-off-result")
            matter = page.locator("#heads-matter-summary")

            def translate(text: str, expected: str) -> None:
                source.fill(text)
                page.locator("#translate").click()
                expect(translation).to_have_value(expected, timeout=60_000)

            def look_inside() -> None:  # a cell, heads off and which heads matter, all of the translation shown
                page.locator("#head input").click()
                page.get_by_role("option", name="head 1", exact=True).click()
                expect(page.locator("#head-plot .gtitle")).to_contain_text("head 1", timeout=30_000)
                page.locator("#cell-query input").fill("2")
                page.locator("#cell-query input").press("Enter")
                expect(cell).to_contain_text("The heatmap of the whole translation.", timeout=30_000)
                page.locator("#off-cross").get_by_label("L4 H3").check()
                page.locator("#heads-off-run").click()
                expect(comparison).to_contain_text("Heads off: cross-attention L4 H3.", timeout=30_000)
                page.locator("#heads-matter").click()
                expect(matter).to_contain_text("teacher-forced passes", timeout=60_000)

            def forgotten() -> None:  # nothing of the translation before is left
                expect(comparison).to_have_text("", timeout=30_000)
                expect(page.locator("#heads-off-plot .main-svg")).to_have_count(0)
                expect(matter).to_have_text("")
                expect(page.locator("#heads-matter-plot .main-svg")).to_have_count(0)

            # a paragraph: the whole translation, and a menu of its sentences that redraws every view
            paragraph = handlers.translate_paragraph(directions, EN_DE, FIVE_CAPTIONS, 5)
            translate(FIVE_CAPTIONS, paragraph.text)
            third = paragraph.sentences[2]
            page.locator("#sentence input").click()
            page.get_by_role("option", name=f"3 · {third.source}").click()
            expect(page.locator("#alignment .tgt")).to_have_count(len(third.attention.target_tokens), timeout=30_000)
            expect(page.locator("#beam-tree g.n.chosen[data-s]")).to_have_count(len(third.attention.target_tokens))
            expect(translation).to_have_value(paragraph.text)

            translate(SENTENCE, first_result.text)
            expect(page.locator("#sentence")).to_be_hidden()  # one sentence: no menu
            open_accordion(page, "Open a cell: the computation behind one weight", "#cell-query")
            open_accordion(page, "Heads off: switch heads off and translate again", "#off-cross")
            look_inside()

            # a new translation: every view redrawn for it, or emptied until asked again
            translate(second, second_result.text)
            forgotten()
            expect(cell).to_contain_text(f"query 2 ({second_result.attention.target_tokens[1]}) gives key",
                                         timeout=30_000)  # the open cell follows the new heatmap
            expect(page.locator("#head-plot .ytick")).to_have_count(len(second_result.attention.target_tokens))
            expect(page.locator("#alignment .tgt")).to_have_count(len(second_result.attention.target_tokens))

            # a node of the tree: the cell follows it and says so; a row it lacks leaves no cell behind
            look_inside()
            page.locator("#beam-tree g.n[data-s='1'][data-i='1']").click()
            expect(page.locator("#node-status")).to_contain_text("step 2, candidate 2", timeout=30_000)
            expect(page.locator("#head-plot .ytick")).to_have_count(2, timeout=30_000)
            expect(cell).to_contain_text("The heatmap of step 2, candidate 2 of the beam search", timeout=30_000)
            page.locator("#cell-query input").fill("5")
            page.locator("#cell-query input").press("Enter")
            expect(page.locator(".toast-body").last).to_contain_text("Query 5 does not exist; this heatmap has 2 rows",
                                                                     timeout=30_000)
            expect(cell).to_have_text("No cell shown: see the message above.")

            # an error: every view emptied
            source.fill("  ")
            page.locator("#translate").click()
            expect(page.get_by_text("the input is empty").first).to_be_visible(timeout=30_000)
            expect(translation).to_have_value("")
            forgotten()
            expect(cell).not_to_contain_text("gives key", timeout=30_000)
            expect(page.locator("#alignment")).to_contain_text("Nothing translated")
            expect(page.locator("#beam-tree")).to_contain_text("Nothing translated")
            expect(page.locator("#head-plot .main-svg")).to_have_count(0)
            expect(page.locator("#node-status")).to_have_text("")

            # a refused request (the queue is full): the page empties every view rather than mix two sentences,
            # and the next translation clears every error badge
            translate(SENTENCE, first_result.text)
            look_inside()
            refused = []

            def full_queue(route):
                if refused:
                    return route.continue_()
                refused.append(route.request.url)
                route.fulfill(status=503, content_type="application/json",
                              body=json.dumps({"detail": "This application is currently busy."}))

            page.route("**/queue/join**", full_queue)
            translate(second, "")
            assert refused
            forgotten()
            expect(cell).not_to_contain_text("gives key", timeout=30_000)
            expect(page.locator("#alignment")).to_contain_text("Nothing translated")
            expect(page.locator("#head-plot .main-svg")).to_have_count(0)
            page.unroute("**/queue/join**")
            translate(second, second_result.text)
            expect(page.locator("#alignment .tgt")).to_have_count(len(second_result.attention.target_tokens))
            expect(page.locator(".block span.error")).to_have_count(0)
        finally:
            browser.close()


def test_a_port_a_stopped_demo_just_left_is_free():
    """A stopped server's port lingers in TIME_WAIT; uvicorn binds it again (SO_REUSEADDR), so the check must too."""
    from demo.app import port_in_use

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    connection, _ = server.accept()
    connection.close()  # the server's side closes first: its end of the connection waits in TIME_WAIT
    client.close()
    server.close()
    time.sleep(0.2)  # the last FIN and ACK cross
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert port_in_use("127.0.0.1", busy.getsockname()[1])


def test_a_link_reopens_the_translation(app_url, directions):
    """The link made from the inputs (text, direction, beam size in the query string) opens the page on the same
    translation; a link carrying markup renders none and fetches nothing; a bad beam size in a link is one message."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    from playwright.sync_api import expect, sync_playwright

    text = "Zwei Hunde spielen im Schnee.\nEin Mann liest."
    expected = handlers.translate_paragraph(directions, DE_EN, text, 3).text
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            outside = []
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith((app_url, "data:", "blob:")) else None)
            page.goto(app_url)
            page.locator("#source textarea").fill(text)
            page.locator("#direction input").click()
            page.get_by_role("option", name=DE_EN).click()
            beam = page.locator("#beam-size input[type=number]")
            beam.fill("3")
            beam.press("Enter")
            page.locator("#make-link").click()
            expect(page.locator("#link textarea, #link input").first).to_have_value(re.compile("^http"),
                                                                                      timeout=30_000)
            link = page.locator("#link textarea, #link input").first.input_value()
            query = parse_qs(urlsplit(link).query)
            assert query == {"text": [text], "direction": ["de-en"], "beam": ["3"]}, query

            other = browser.new_page(viewport={"width": 390, "height": 844})
            other.on("request", lambda request: outside.append(request.url)
                     if not request.url.startswith((app_url, "data:", "blob:")) else None)
            other.goto(link)
            expect(other.locator("#translation textarea")).to_have_value(expected, timeout=60_000)
            expect(other.locator("#source textarea")).to_have_value(text)
            expect(other.locator("#beam-size input[type=number]")).to_have_value("3")
            expect(other.locator("#direction input")).to_have_value(DE_EN)
            other.wait_for_selector("#head-plot .xtick", timeout=30_000)

            other.goto(app_url + "?" + urlencode({"text": INJECTION_LINE, "direction": "en-de", "beam": "1"}))
            expect(other.locator("#notices code")).to_contain_text("# heading [link](http://203.0.113.9/x) <img",
                                                                   timeout=60_000)
            assert other.locator("#notices :is(h1, h2, a, img)").count() == 0
            other.goto(app_url + "?" + urlencode({"text": "A dog.", "beam": "99"}))
            expect(other.locator(".toast-body")).to_contain_text("The link asks for the beam size '99'",
                                                                 timeout=30_000)
            assert outside == [], f"the page fetched from outside: {outside}"
        finally:
            browser.close()


def test_the_keyboard_path_on_a_phone(app_url, directions):
    """On a phone the input and the Translate button are in the first screen; each radio group is one group (one
    name: the arrow keys move the choice, Tab stops once, a focus ring shows); plotly's toolbar is not in the Tab
    order."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(app_url)
            page.wait_for_selector("#translate")
            (button,) = boxes(page, "#translate")
            assert button[3] <= 844, button  # above the fold
            source = page.locator("#source textarea")
            source.fill(SENTENCE)
            source.press("Enter")
            page.wait_for_selector("#head-plot .xtick", timeout=60_000)
            page.locator("#compare").get_by_text("Two sentences side by side").first.click()
            page.wait_for_selector("#compare-kind input[type=radio]")
            for group in ("#kind", "#compare-kind"):
                names = page.eval_on_selector_all(f"{group} input[type=radio]", "inputs => inputs.map(i => i.name)")
                assert len(names) == 3 and len(set(names)) == 1, (group, names)
            page.locator("#kind input[type=radio]:checked").focus()
            page.keyboard.press("ArrowDown")
            expect(page.locator("#head-plot .gtitle")).to_contain_text("Encoder self-attention", timeout=30_000)
            assert page.evaluate("document.activeElement.value") == "encoder"
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
            toolbar = page.eval_on_selector_all(".modebar-btn", "buttons => buttons.filter(b => b.offsetParent)")
            assert toolbar == []  # none rendered, so none can take the focus
        finally:
            browser.close()


def test_the_worked_example_names_its_article():
    from demo.app import LESSON_INTRO

    intro = " ".join(LESSON_INTRO.split())
    assert "Transformer注意力机制的发展历程与里程碑" in intro and "Attention Is All You Need" in intro
