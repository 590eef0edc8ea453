"""The Gradio app: translate, then inspect every layer's and head's attention of that translation.

``python -m demo`` runs :func:`main`; :func:`build_demo` lays the handlers of :mod:`demo.handlers`,
:mod:`demo.inside` and :mod:`demo.heads` out in a ``gr.Blocks`` and is what tests launch. Only ``gr.Error`` reaches the page, so handler
errors are turned into it here.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from serve import BundleError, Translator
from serve.arguments import PORT, POSITIVE, add_precision

from . import beamtree, figures, handlers, heads, inside

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
EXAMPLES = [  # photo captions and everyday sentences, written for the demo (not taken from the data sets)
    ("English → German", "Two young children are playing with a red ball on the grass."),
    ("English → German", "A man in a blue jacket is riding his bicycle down a busy street."),
    ("English → German", "I have no time today."),
    ("English → German", "My brother works in a hospital."),
    ("German → English", "Eine Frau mit Sonnenbrille sitzt auf einer Bank im Park."),
    ("German → English", "Drei Männer arbeiten auf einer Baustelle neben der Straße."),
    ("German → English", "Ich habe heute keine Zeit."),
    ("German → English", "Das Wetter ist schön, lass uns spazieren gehen."),
]
INTRO = """# attention-mt: watch every attention head translate

A Transformer written from *Attention Is All You Need*, small enough to run on any CPU (ONNX, no torch). Translate a
sentence, then look inside: the encoder's self-attention, the decoder's self-attention and the encoder–decoder
attention of **the translation beam search chose**, for every layer and every head."""
# Under the input, not above it: on a phone the input and the Translate button stay in the first screen.
DOMAIN = """**Know the domain:** both models learned from [Multi30K](https://github.com/multi30k/dataset) (29,000 short
descriptions of everyday photos) and from the everyday example sentences and phrases of the Ding German–English
dictionary (16,000 sentences). They translate captions well and short, simple everyday sentences only sometimes
right; they are tiny (2.35 M parameters), so on idioms, news, long or technical text they will make confident
mistakes. The **Confidence** line under each translation says when a sentence does not look like the captions the
models translate well: treat those translations with care."""
LESSON_INTRO = """The worked example of the article this project started from, *Transformer注意力机制的发展历程与里程碑*
("The history and milestones of the Transformer's attention", in Chinese), which explains the formulas of "Attention
Is All You Need" (Vaswani et al., 2017): the sentence **"Transformer is powerful"**, three tokens with
3-dimensional embeddings, the article's positional vectors added, and one attention head with d_k = d_v = 3. The
projections W^Q, W^K, W^V are random (standard normal): change the seed to draw others. Every number below is computed
live by `demo/lesson.py`. (The article's positional vectors are illustrative; the model itself adds the sinusoidal
encoding plotted at the bottom.)"""
LESSON_CSS = """
.matrix-row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
table.matrix { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 0.9em; }
table.matrix caption { font-family: system-ui, sans-serif; font-weight: 600; padding-bottom: 4px; }
table.matrix th, table.matrix td { border: 1px solid rgba(128, 128, 128, 0.35); padding: 3px 8px; text-align: right; }
"""
THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts
# Page-wide CSS (launch(css=...)): a component's css_template is scoped to it (an id selector) and cannot see the
# dark-mode class on the page, so the dark shade is set here, with an id of its own to outrank the scoped rule.
# A figure wider than its box (a heatmap of many tokens) scrolls sideways in the box, labels and all: Gradio sets
# overflow: hidden inline on every plot's block, which only !important outranks. Plotly's toolbar (shown on hover,
# at the far right of a wide figure) is left out: its 16 buttons would sit unseen in the Tab order. The what-if's
# table scrolls in its box too.
CSS = """.dark #alignment .alignment { --alignment-rgb: 125, 178, 255; }
.dark #beam-tree .beam-tree { --beam-rgb: 96, 150, 245; }
.block:has(> .js-plotly-plot) { overflow-x: auto !important; }
.js-plotly-plot .modebar-container { display: none; }
.block input[type=radio]:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 2px; }
#what-if-table table { display: block; width: max-content; max-width: 100%; overflow-x: auto; }
#what-if-table th, #what-if-table td { padding: 2px 6px; white-space: nowrap; }"""

# The whole translation shown again: no node of the tree is marked as the one shown (run in the page, no server).
UNSELECT_NODE = ("() => document.querySelectorAll('#beam-tree g.n.selected')"
                 ".forEach((node) => node.classList.remove('selected'))")

def shown_on_page(handler):
    """The handler, with its DemoInputError turned into gr.Error: the only kind of error the page shows."""
    @functools.wraps(handler)
    def wrapper(*args):
        try:
            return handler(*args)
        except handlers.DemoInputError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


def head_choices(heads: int) -> list[tuple[str, str]]:
    return [("mean of heads", handlers.MEAN)] + [(f"head {h}", str(h)) for h in range(1, heads + 1)]


def build_demo(directions: Mapping[str, Translator], *, export_dir: str | Path | None = None, max_queue: int = 64,
               concurrency: int = 2) -> gr.Blocks:
    """The page for already loaded translators ({direction label: translator}); nothing is loaded per request.

    At most ``concurrency`` events run at once and ``max_queue`` wait; more are refused (Gradio's queue).
    """
    if not directions:
        raise ValueError("the demo needs at least one model")
    export_dir = Path(export_dir or tempfile.mkdtemp(prefix="attention-mt-demo-"))
    first = next(iter(directions.values())).config
    default_direction = next((label for label in directions if label.startswith("English")), next(iter(directions)))
    examples = [[direction, text] for direction, text in EXAMPLES if direction in directions]

    @shown_on_page
    def translate(text: str, direction: str, beam_size: int):
        paragraph = handlers.translate_paragraph(directions, direction, text, beam_size)
        first = paragraph.sentences[0]
        return (paragraph.text, handlers.confidence_text(paragraph), handlers.notices_markdown(paragraph), paragraph,
                first, first)

    @shown_on_page
    def candidates(result: handlers.DemoTranslation | None, position: int):
        if result is None:
            return gr.skip()
        choices = inside.candidate_choices(directions, result, position)
        return gr.update(choices=choices, value=inside.first_alternative(result, position, choices))

    @shown_on_page
    def views(shown: handlers.DemoTranslation | None, kind: str, layer: str, head: str, rollout: bool):
        """The attention views of what is shown (the translation or a node of its search) and their controls."""
        if shown is None:
            return (gr.skip(),) * 6
        controls = control_updates(shown, kind, layer, rollout)
        drawn = handlers.attention_views(shown, kind, int(controls[0]["value"]), head, rollout and kind == "encoder")
        return (drawn.head_figure, drawn.heads_figure, drawn.alignment_html, *controls)

    def sentence_views(result: handlers.DemoTranslation, kind: str, layer: str, head: str, rollout: bool):
        """Every view of one sentence's translation (:data:`translated_outputs` after the sentence menu): the views
        show it whole, its search is drawn, the what-if starts at position 1, heads off and which heads matter
        forget the sentence before, the cell view waits for the new heatmap."""
        positions = inside.position_choices(result)
        return (result, result, "", inside.beam_tree_view(directions, result),
                gr.update(choices=positions, value=1 if positions else None),
                candidates(result, 1) if positions else gr.update(choices=[], value=None), None, "", "", None,
                *views(result, kind, layer, head, rollout),
                gr.update(value=str(handlers.write_attention_json(result, export_dir)), visible=True),
                CELL_WAITING, None, "", None, None, "")

    def translated_page(text: str, direction: str, beam_size: int, kind: str, layer: str, head: str, rollout: bool):
        """A text translated sentence by sentence and every view of its first sentence, in one event, so that a
        refused or failed request can never leave one view of the new translation beside views of the old one."""
        paragraph = handlers.translate_paragraph(directions, direction, text, beam_size)
        return (paragraph.text, handlers.confidence_text(paragraph), handlers.notices_markdown(paragraph), paragraph,
                sentence_menu(paragraph), *sentence_views(paragraph.sentences[0], kind, layer, head, rollout))

    @shown_on_page
    def show_sentence(paragraph: handlers.DemoParagraph | None, number, kind: str, layer: str, head: str,
                      rollout: bool):
        """Another sentence of the translated text: every view of it, in one event."""
        if paragraph is None:
            return (gr.skip(),) * len(translated_outputs)
        index = inside.whole_number(number, "sentence")
        if not 1 <= index <= len(paragraph.sentences):
            raise handlers.DemoInputError(f"Sentence {index} does not exist; the text has {len(paragraph.sentences)}.")
        return ((gr.skip(),) * 5 + sentence_views(paragraph.sentences[index - 1], kind, layer, head, rollout))

    @shown_on_page
    def open_link(kind: str, layer: str, head: str, rollout: bool, request: gr.Request):
        """A page opened by a link to a translation (?text=…&direction=…&beam=…): its inputs filled in and translated
        as Translate would; a page without one is left as it is."""
        link = handlers.read_link(directions, dict(request.query_params))
        if link is None:
            return (gr.skip(),) * (3 + len(translated_outputs))
        return (link.text, link.direction, link.beam_size,
                *translated_page(link.text, link.direction, link.beam_size, kind, layer, head, rollout))

    def clear_result():
        """Every view that depends on the translation, emptied: nothing on the page belongs to another input."""
        return ("", "", "", None, gr.update(choices=[], value=None, visible=False), None, None, "",
                "<p>Nothing translated.</p>", gr.update(choices=[], value=None),
                gr.update(choices=[], value=None), None, "", "", None, None, None,
                "<p>Nothing translated: see the message above.</p>", gr.skip(), gr.skip(), gr.skip(),
                gr.update(value=None, visible=False), CELL_WAITING, None, "", None, None, "")

    @shown_on_page
    def show_node(result: handlers.DemoTranslation | None, step: int, index: int):
        if result is None:
            raise handlers.DemoInputError("Translate a sentence first: its search has the nodes.")
        shown = inside.partial_hypothesis(directions, result, step, index)
        return shown, inside.node_summary(shown, step, index)

    @shown_on_page
    def shown_node_page(result: handlers.DemoTranslation | None, event: gr.EventData, kind: str, layer: str,
                        head: str, rollout: bool):
        """A node clicked in the tree: its partial hypothesis, the line that says so and every view of it, in one
        event."""
        step, index = event.step + 1, event.index + 1
        shown, summary = show_node(result, step, index)
        return (step, index, shown, summary, *views(shown, kind, layer, head, rollout))

    def show_whole(result: handlers.DemoTranslation | None):
        return result, ""

    def shown_whole_page(result: handlers.DemoTranslation | None, kind: str, layer: str, head: str, rollout: bool):
        return (result, "", *views(result, kind, layer, head, rollout))

    @shown_on_page
    def what_if(result: handlers.DemoTranslation | None, position: int, candidate: str, typed: str, layer: str,
                head: str):
        if result is None:
            raise handlers.DemoInputError("Translate a sentence first, then change it here.")
        found = inside.what_if(directions, result, position, candidate, typed, layer, head)
        return (found.result.text, f"Decoded on from {found.start}; the map of changes covers the positions both "
                                   f"translations have.\n\n{found.table}", found.difference, found.result)

    @shown_on_page
    def what_if_redraw(result, new, layer: str, head: str):
        if result is None or new is None:
            return gr.skip()
        return inside.cross_difference(result, new, layer, head)

    @shown_on_page
    def compare(first: str, second: str, direction: str, beam_size: int, kind: str, layer: str, head: str,
                rollout: bool):
        pair = inside.compare(directions, direction, first, second, beam_size)
        drawn = inside.compare_views(*pair, kind, layer, head, rollout and kind == "encoder")
        return (pair[0].text, pair[1].text, *drawn, pair)

    @shown_on_page
    def compare_redraw(pair, kind: str, layer: str, head: str, rollout: bool):
        if pair is None:
            return (gr.skip(),) * 5
        controls = control_updates(pair[0], kind, layer, rollout)
        drawn = inside.compare_views(*pair, kind, int(controls[0]["value"]), head, rollout and kind == "encoder")
        return (*drawn, *controls)

    def compare_control_updates(pair, kind: str, layer: str, rollout: bool):
        return control_updates(pair[0], kind, layer, rollout) if pair else (gr.skip(),) * 3

    worked_example = shown_on_page(handlers.worked_example_view)
    positional_encoding = shown_on_page(handlers.positional_encoding_view)

    with gr.Blocks(title="attention-mt: watch every attention head translate", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        paragraph_state = gr.State(None)  # the text translated sentence by sentence (handlers.DemoParagraph)
        result_state = gr.State(None)  # the translation of the sentence the views are of
        shown_state = gr.State(None)  # what the attention views show: the translation, or a node of its search
        what_if_state = gr.State(None)  # the what-if's new translation
        compare_state = gr.State(None)  # the two compared translations
        head_trace = gr.State(None)  # one head's trace of what is shown (heads.HeadTrace): what any cell of it needs
        with gr.Tab("Translate"):  # short tab names: both stay visible on a phone, not behind a "…" menu
            page = translate_tab(directions, default_direction, examples, first)
            look_inside = inside_sections(first)  # issue #26: open a cell, heads off
        with gr.Tab("How attention works"):
            lesson = lesson_tab(first)

        view_outputs = [page.head_plot, page.heads_plot, page.alignment, page.layer, page.head, page.rollout]
        view_controls = [page.kind, page.layer, page.head, page.rollout]
        # Everything a translation decides, written by one event (translated_page, or clear_result after an error).
        translated_outputs = [page.translation, page.confidence, page.notices, paragraph_state, page.sentence,
                              result_state, shown_state,
                              page.node_status, page.tree, page.position, page.candidate, what_if_state,
                              page.what_if_translation, page.what_if_table, page.what_if_plot, *view_outputs,
                              page.download, look_inside.cell, head_trace, look_inside.comparison,
                              look_inside.heads_off_plot, look_inside.matter_plot, look_inside.matter_summary]

        def translated(trigger, **listen):
            """Translate on trigger and redraw every view of it in the same event; the event, to chain on."""
            event = trigger(shown_on_page(translated_page), [page.source, page.direction, page.beam_size,
                                                             *view_controls],
                            translated_outputs, api_visibility="private", **listen)
            event.failure(clear_result, None, translated_outputs, api_visibility="private")  # nothing stale
            return event

        for trigger in (page.translate_button.click, page.source.submit, page.examples.load_input_event.then):
            translated(trigger)
        for control in view_controls:
            control.input(views, [shown_state, *view_controls], view_outputs, api_visibility="private")
        demo.load(open_link, view_controls, [page.source, page.direction, page.beam_size, *translated_outputs],
                  api_visibility="private", show_progress="hidden",  # no spinners over a page opened plainly
                  ).failure(clear_result, None, translated_outputs, api_visibility="private")
        demo.load(None, js=RADIO_GROUPS, api_visibility="private")
        model_names = json.dumps({label: translator.name for label, translator in directions.items()})
        page.make_link.click(None, [page.source, page.direction, page.beam_size], [page.link],
                             js=MAKE_LINK.replace("NAMES", model_names), api_visibility="private")
        page.sentence.input(show_sentence, [paragraph_state, page.sentence, *view_controls], translated_outputs,
                            api_visibility="private")

        # The beam tree: a node clicked in the page shows its attention (its line and every view, one event).
        page.tree.select(shown_node_page, [result_state, *view_controls],
                         [page.node_step, page.node_index, shown_state, page.node_status, *view_outputs],
                         api_visibility="private")
        page.whole.click(None, None, None, js=UNSELECT_NODE, api_visibility="private")
        page.whole.click(shown_whole_page, [result_state, *view_controls],
                         [shown_state, page.node_status, *view_outputs], api_visibility="private")

        # The same through the API (the page's own events above draw the figures as well): hidden triggers.
        with gr.Group(visible=False):
            api_translate = gr.Button("translate", elem_id="api-translate")
            api_node = gr.Button("beam node", elem_id="api-beam-node")
            api_whole = gr.Button("whole translation", elem_id="api-whole")
        api_translate.click(translate, [page.source, page.direction, page.beam_size],
                            [page.translation, page.confidence, page.notices, paragraph_state, result_state,
                             shown_state], api_name="translate"
                            ).failure(lambda: (None, None, None), None, [paragraph_state, result_state, shown_state],
                                      api_visibility="private")
        api_node.click(show_node, [result_state, page.node_step, page.node_index], [shown_state, page.node_status],
                       api_name="beam_node")
        api_whole.click(show_whole, [result_state], [shown_state, page.node_status], api_name="whole_translation")

        page.position.input(candidates, [result_state, page.position], [page.candidate], api_visibility="private")
        what_if_outputs = [page.what_if_translation, page.what_if_table, page.what_if_plot, what_if_state]
        page.what_if_button.click(
            what_if, [result_state, page.position, page.candidate, page.what_if_typed, page.what_if_layer,
                      page.what_if_head], what_if_outputs, api_name="what_if"
        ).failure(lambda: ("", "", None, None), None, what_if_outputs, api_visibility="private")  # nothing stale
        for control in (page.what_if_layer, page.what_if_head):
            control.input(what_if_redraw, [result_state, what_if_state, page.what_if_layer, page.what_if_head],
                          [page.what_if_plot], api_visibility="private")

        compare_controls = [page.compare_kind, page.compare_layer, page.compare_head, page.compare_rollout]
        compare_outputs = [page.compare_plots[0], page.compare_plots[1], page.compare_layer, page.compare_head,
                           page.compare_rollout]
        compared = [*page.compare_translations, *page.compare_plots, compare_state]
        event = page.compare_button.click(
            compare, [*page.compare_texts, page.direction, page.beam_size, *compare_controls], compared,
            api_name="compare")
        event.failure(lambda: ("", "", None, None, None), None, compared, api_visibility="private")
        event.success(compare_control_updates,
                      [compare_state, page.compare_kind, page.compare_layer, page.compare_rollout],
                      compare_outputs[2:], api_visibility="private")
        for control in compare_controls:
            control.input(compare_redraw, [compare_state, *compare_controls], compare_outputs,
                          api_visibility="private")

        # One event per control: Enter, blur, arrow keys and drag all change the value; the last one wins.
        lesson.seed.change(worked_example, [lesson.seed], [lesson.html, lesson.plot], api_name="worked_example",
                           trigger_mode="always_last")
        pe_inputs = [lesson.pe_length, lesson.pe_d_model]
        lesson.pe_length.change(positional_encoding, pe_inputs, [lesson.pe_plot], api_name="positional_encoding",
                                trigger_mode="always_last")
        lesson.pe_d_model.change(positional_encoding, pe_inputs, [lesson.pe_plot], api_visibility="private",
                                 trigger_mode="always_last")
        wire_inside(demo, directions, default_direction, page, lesson, look_inside, result_state, shown_state,
                    head_trace, translated)
    return demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)


def sentence_menu(paragraph: handlers.DemoParagraph) -> dict:
    """The menu of a text's sentences, the first chosen; shown only when there are several."""
    choices = [(f"{number} · {sentence.source if len(sentence.source) <= 70 else sentence.source[:69] + '…'}",
                number) for number, sentence in enumerate(paragraph.sentences, start=1)]
    return gr.update(choices=choices, value=1, visible=len(choices) > 1)


def control_updates(result: handlers.DemoTranslation, kind: str, layer: str, rollout: bool) -> tuple[dict, ...]:
    """The layer menu for an attention kind (its layers; the chosen one kept when that kind has it), the head menu
    (idle under a rollout, which averages the heads) and the rollout switch (the encoder's only)."""
    layers = handlers.layer_count(result, kind)
    return (gr.update(choices=[str(n) for n in range(1, layers + 1)], value=str(min(int(layer), layers))),
            gr.update(interactive=not (rollout and kind == "encoder")), gr.update(visible=kind == "encoder"))


def attention_controls(first, prefix: str = "") -> SimpleNamespace:
    """The attention kind, layer, head and (for the encoder) rollout controls, in a row of the current Blocks."""
    with gr.Row():
        kind = gr.Radio([(label, key) for key, label in handlers.ATTENTION_KINDS.items()], value="cross",
                        label="Attention", elem_id=f"{prefix}kind", scale=3)
        layer, head = layer_head_controls(first, prefix)
    rollout = gr.Checkbox(False, label="Attention rollout over the encoder layers (Abnar & Zuidema 2020)",
                          info="Each layer's mean over heads plus the identity (the residual), rows renormalized, "
                               "multiplied from layer 1 up to the chosen layer: what each position draws on the "
                               "input tokens through all those layers.", visible=False, elem_id=f"{prefix}rollout")
    return SimpleNamespace(kind=kind, layer=layer, head=head, rollout=rollout)


def layer_head_controls(first, prefix: str = "") -> tuple[gr.Dropdown, gr.Dropdown]:
    """The layer and head menus (the decoder's layers: the cross-attention kind comes first)."""
    layer = gr.Dropdown([str(n) for n in range(1, first.n_decoder_layers + 1)], value="1", label="Layer",
                        elem_id=f"{prefix}layer", scale=1, min_width=100)
    head = gr.Dropdown(head_choices(first.n_heads), value=handlers.MEAN, label="Head", elem_id=f"{prefix}head",
                       scale=1, min_width=170)
    return layer, head


def translate_tab(directions: Mapping[str, Translator], default_direction: str, examples: list,
                  first) -> SimpleNamespace:
    """The translate tab's components, laid out inside the current Blocks."""
    with gr.Row():
        with gr.Column(scale=3):
            source = gr.Textbox(label="Sentence", lines=1, max_lines=6, elem_id="source",
                                placeholder="Type or paste a sentence to translate…",
                                info=f"Enter translates, Shift+Enter starts a new line. At most "
                                     f"{handlers.LIMITS.max_chars:,} characters and {handlers.LIMITS.max_tokens} "
                                     "subword tokens are read; longer text is cut, with a notice.")
        with gr.Column(scale=1, min_width=220):
            direction = gr.Dropdown(list(directions), value=default_direction, label="Direction",
                                    elem_id="direction")
            beam_size = gr.Slider(1, handlers.LIMITS.max_beams, value=5, step=1, label="Beam size",
                                  info=f"1 is greedy search; a whole number from 1 to {handlers.LIMITS.max_beams}",
                                  elem_id="beam-size")
            translate_button = gr.Button("Translate", variant="primary", elem_id="translate")
    gr.Markdown(DOMAIN, elem_id="domain")
    translation = gr.Textbox(label="Translation", interactive=False, elem_id="translation", buttons=["copy"])
    with gr.Row(equal_height=True):
        make_link = gr.Button("Link to this text", size="sm", elem_id="make-link", scale=0, min_width=160)
        link = gr.Textbox(show_label=False, interactive=False, elem_id="link", buttons=["copy"], scale=3,
                          placeholder="a link that opens this page on the text, direction and beam size above")
    confidence = gr.Textbox(label="Confidence", interactive=False, elem_id="confidence", lines=1,
                            info="Does the sentence look like the captions the model translates well? Calibrated on "
                                 "Multi30K (in) and everyday sentences, other languages and noise (out).")
    notices = gr.Markdown(label="Notices", elem_id="notices")
    sentence = gr.Dropdown([], label="Sentence whose attention is shown below", elem_id="sentence", visible=False,
                           info="The text was translated one sentence at a time.")
    examples = gr.Examples(examples, inputs=[direction, source], cache_examples=False,
                           label="Examples (captions and everyday sentences): click one to translate it")

    # Each look-inside view is an accordion of its own; more views go beside them.
    with gr.Accordion("Beam search: every candidate the search ranked", open=True, elem_id="beam-search"):
        tree = gr.HTML("<p>Translate a sentence to see its search.</p>", css_template=beamtree.BEAM_TREE_CSS,
                       js_on_load=beamtree.BEAM_TREE_SCRIPT, elem_id="beam-tree", padding=False)
        node_step = gr.Number(label="Step", precision=0, visible=False, elem_id="node-step")
        node_index = gr.Number(label="Candidate", precision=0, visible=False, elem_id="node-index")

    gr.Markdown("### Inspect the attention of this translation")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            node_status = gr.Markdown(label="Shown", elem_id="node-status")
        with gr.Column(scale=1, min_width=200):
            whole = gr.Button("Show the whole translation", size="sm", elem_id="whole")
    controls = attention_controls(first)
    alignment = gr.HTML("<p>Translate a sentence to see which source tokens each output token attends "
                        "to.</p>", css_template=figures.ALIGNMENT_CSS, js_on_load=figures.ALIGNMENT_SCRIPT,
                        elem_id="alignment", padding=True)
    # The figures carry their own titles: Gradio's label badge would sit on them.
    head_plot = gr.Plot(label="Chosen head", show_label=False, elem_id="head-plot")
    heads_plot = gr.Plot(label="All heads of the layer", show_label=False, elem_id="heads-plot")
    download = gr.DownloadButton("Download the translation and all attention weights (JSON)",
                                 visible=False, elem_id="download")

    with gr.Accordion("What if: another token at one position, and decoding goes on from it", open=False,
                      elem_id="what-if"):
        gr.Markdown("Pick an output position and one of the candidates the search ranked there (or type the start "
                    "of the translation); the search decodes on from it with the same beam size.")
        with gr.Row():
            # Their choices follow the translation; the handler checks a value against them.
            position = gr.Dropdown([], label="Position", elem_id="what-if-position", min_width=160,
                                   allow_custom_value=True)
            candidate = gr.Dropdown([], label="Candidate", elem_id="what-if-candidate", min_width=200,
                                    allow_custom_value=True)
        what_if_typed = gr.Textbox(label="…or type the start of the translation", elem_id="what-if-typed",
                                   placeholder="e.g. Die Frau", info="When not blank, it is used instead of the "
                                                                    "position and candidate.")
        with gr.Row():
            what_if_layer, what_if_head = layer_head_controls(first, "what-if-")
            what_if_button = gr.Button("Decode from here", variant="primary", elem_id="what-if-run", scale=1,
                                       min_width=160)
        what_if_translation = gr.Textbox(label="New translation", interactive=False, elem_id="what-if-translation")
        what_if_table = gr.Markdown(label="Log-probabilities", elem_id="what-if-table")
        what_if_plot = gr.Plot(label="Change of the cross-attention", show_label=False, elem_id="what-if-plot")

    with gr.Accordion("Two sentences side by side", open=False, elem_id="compare"):
        gr.Markdown("Both are translated in the direction and with the beam size above, and shown with the same "
                    "attention kind, layer and head on one colour scale.")
        with gr.Row():
            compare_texts = [gr.Textbox(text, label=f"Sentence {name}", elem_id=f"compare-source-{name.lower()}",
                                        min_width=240) for name, text in zip("AB", inside.COMPARE_EXAMPLE)]
        compare_button = gr.Button("Translate both", variant="primary", elem_id="compare-run")
        compare_controls = attention_controls(first, "compare-")
        with gr.Row():
            with gr.Column(min_width=300):
                first_translation = gr.Textbox(label="Translation A", interactive=False,
                                               elem_id="compare-translation-a")
                first_plot = gr.Plot(label="Attention A", show_label=False, elem_id="compare-plot-a")
            with gr.Column(min_width=300):
                second_translation = gr.Textbox(label="Translation B", interactive=False,
                                                elem_id="compare-translation-b")
                second_plot = gr.Plot(label="Attention B", show_label=False, elem_id="compare-plot-b")
    return SimpleNamespace(source=source, direction=direction, beam_size=beam_size, translate_button=translate_button,
                           translation=translation, confidence=confidence, notices=notices, sentence=sentence,
                           make_link=make_link, link=link,
                           examples=examples,
                           tree=tree, node_step=node_step, node_index=node_index, node_status=node_status,
                           whole=whole, kind=controls.kind, layer=controls.layer, head=controls.head,
                           rollout=controls.rollout, alignment=alignment, head_plot=head_plot, heads_plot=heads_plot,
                           download=download, position=position, candidate=candidate, what_if_typed=what_if_typed,
                           what_if_layer=what_if_layer, what_if_head=what_if_head, what_if_button=what_if_button,
                           what_if_translation=what_if_translation, what_if_table=what_if_table,
                           what_if_plot=what_if_plot, compare_texts=compare_texts, compare_button=compare_button,
                           compare_kind=compare_controls.kind, compare_layer=compare_controls.layer,
                           compare_head=compare_controls.head, compare_rollout=compare_controls.rollout,
                           compare_translations=[first_translation, second_translation],
                           compare_plots=[first_plot, second_plot])


def lesson_tab(first) -> SimpleNamespace:
    """The worked example and the positional encoding, laid out inside the current Blocks."""
    lesson_html, lesson_figure = handlers.worked_example_view(0)
    gr.Markdown(LESSON_INTRO)
    seed = gr.Number(value=0, label="Seed of W^Q, W^K, W^V", info=f"a whole number from 0 to {2**32 - 1}",
                     elem_id="seed")
    html = gr.HTML(lesson_html, label="Worked example", css_template=LESSON_CSS, js_on_load=None, elem_id="lesson")
    plot = gr.Plot(lesson_figure, label="Attention weights", show_label=False, elem_id="lesson-plot")
    real_model = gr.Button("Now the same steps in the real model →", elem_id="real-model")
    gr.Markdown("### Sinusoidal positional encoding\n"
                "PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), "
                "computed by the project's own `core.positional.sinusoidal_table` (the table the model adds "
                f"to its embeddings; the shipped models use d_model = {first.d_model}).")
    with gr.Row():
        pe_length = gr.Slider(1, 512, value=64, step=1, label="Positions", elem_id="pe-length",
                              info="a whole number from 1 to 512")
        pe_d_model = gr.Slider(2, 512, value=first.d_model, step=2, label="d_model", elem_id="pe-d-model",
                               info="an even number from 2 to 512")
    pe_plot = gr.Plot(handlers.positional_encoding_view(64, first.d_model), label="Positional encoding",
                      show_label=False, elem_id="pe-plot")
    return SimpleNamespace(seed=seed, html=html, plot=plot, pe_length=pe_length, pe_d_model=pe_d_model,
                           pe_plot=pe_plot, real_model=real_model)


# ---- Look inside (issue #26): open a cell of the heatmap, switch heads off -----------------------------------------

CELL_INTRO = """Every weight of the heatmap above is softmax(q_i K^T / sqrt(d_k))_j for one head. Click (tap) a
cell of the heatmap, or type its row (query i) and column (key j), numbered as on the heatmap's axes, to see the
model's own numbers for this sentence: the sublayer's input, q, K, V, the scores, the softmax and the head's output.
The kind, layer and head are the heatmap's (choose one head, not the mean)."""
HEADS_INTRO = """Tick heads to switch them off (each adds nothing but W^O's bias) and translate the same sentence
again with the same beam. **Which heads matter?** switches each of the heads off alone and measures how much less
likely the original translation becomes (teacher-forced, one pass per head plus one with all on: about 1–2 s).

*Exercise: find the alignment head.* Press **Which heads matter?**, find the cross-attention head that costs the most,
then show it above (Attention: encoder–decoder, its layer and head): does its heatmap follow the diagonal, each
output word looking at the source word it translates? Switch it off alone and see which tokens lose probability."""
LESSON_SENTENCE = "Transformer is powerful."  # the worked example's sentence, in the real model
SHOW_TRANSLATE_TAB = """() => { [...document.querySelectorAll('button[role=tab]')]
  .find((tab) => tab.textContent.trim() === 'Translate')?.click(); }"""
SCROLL_TO_CELL = "() => { document.getElementById('cell-accordion')?.scrollIntoView({block: 'start'}); }"
# Runs in the page: the link that reopens what the inputs hold (demo.handlers.read_link reads it), shown to copy.
MAKE_LINK = """(text, direction, beam) => {
  const url = new URL(window.location.href);
  url.search = new URLSearchParams({text, direction: NAMES[direction] ?? direction, beam: String(beam)}).toString();
  url.hash = '';
  return url.href;
}"""
# Runs in the page once it loads: Gradio names each radio button of a group differently, so the arrow keys would not
# move between them and Tab would stop at each; one name per group (its block's id) makes it one radio group.
RADIO_GROUPS = """() => {
  const group = () => document.querySelectorAll('.block:has(input[type=radio])').forEach((block) => {
    const name = block.id || 'radio-group';
    block.querySelectorAll('input[type=radio]').forEach((input) => { if (input.name !== name) input.name = name; });
  });
  new MutationObserver(group).observe(document.body, {childList: true, subtree: true});
  group();
}"""
CELL_WAITING = "<p>Click (tap) a cell of the chosen head's heatmap, or type its row and column.</p>"
CELL_REFUSED = "<p>No cell shown: see the message above.</p>"


def inside_sections(config) -> SimpleNamespace:
    """The two look-inside accordions (open a cell, heads off), laid out inside the current Blocks."""
    with gr.Accordion("Open a cell: the computation behind one weight", open=False,
                      elem_id="cell-accordion") as cell_accordion:
        gr.Markdown(CELL_INTRO)
        with gr.Row():
            query = gr.Number(1, label="Query i (row)", precision=0, minimum=1, elem_id="cell-query", min_width=110)
            key = gr.Number(1, label="Key j (column)", precision=0, minimum=1, elem_id="cell-key", min_width=110)
        all_dimensions = gr.Checkbox(False, label=f"Show all dimensions (not only the first {heads.SHOWN})",
                                     elem_id="cell-all")
        cell = gr.HTML("<p>Translate a sentence, then pick a cell.</p>", elem_id="cell-view", padding=True,
                       css_template=LESSON_CSS + heads.CELL_CSS)
    with gr.Accordion("Heads off: switch heads off and translate again", open=False, elem_id="heads-accordion"):
        gr.Markdown(HEADS_INTRO)
        switches = [gr.CheckboxGroup(heads.head_choices(config, kind), label=f"{label}: heads switched off",
                                     elem_id=f"off-{kind}") for kind, label in handlers.ATTENTION_KINDS.items()]
        with gr.Row():
            run = gr.Button("Translate with these heads off", variant="primary", elem_id="heads-off-run")
            all_on = gr.Button("All on", elem_id="heads-all-on")
        comparison = gr.HTML("", css_template=LESSON_CSS + heads.CELL_CSS, elem_id="heads-off-result",
                             padding=True)
        heads_off_plot = gr.Plot(label="With heads off", show_label=False, elem_id="heads-off-plot")
        matter = gr.Button("Which heads matter?", elem_id="heads-matter")
        matter_summary = gr.Markdown(elem_id="heads-matter-summary")
        matter_plot = gr.Plot(label="Which heads matter", show_label=False, elem_id="heads-matter-plot")
    return SimpleNamespace(cell_accordion=cell_accordion, query=query, key=key, all_dimensions=all_dimensions,
                           cell=cell, switches=switches, run=run, all_on=all_on, comparison=comparison,
                           heads_off_plot=heads_off_plot, matter=matter, matter_summary=matter_summary,
                           matter_plot=matter_plot)


def wire_inside(demo: gr.Blocks, directions: Mapping[str, Translator], default_direction: str,
                page: SimpleNamespace, lesson: SimpleNamespace, look: SimpleNamespace, result_state: gr.State,
                shown_state: gr.State, head_trace: gr.State, translated) -> None:
    """The look-inside events: a cell (of what the heatmap shows: the translation or a node of its search) follows
    its inputs, a click on the heatmap and, while its accordion is open, the heatmap; heads off; which heads matter;
    the lesson's link to the same steps in the real model."""
    cell_open = gr.State(False)
    cell_inputs = [shown_state, page.kind, page.layer, page.head, look.query, look.key, look.all_dimensions,
                   head_trace]

    def cell(shown, kind, layer, head, query, key, all_dimensions, cached):
        opened, cached = heads.open_cell(directions, shown, kind, layer, head, query, key, cached)
        return heads.cell_html(opened, all_dimensions, handlers.shown_name(shown)), cached

    def follow_heatmap(is_open: bool, *args):
        """The cell of the heatmap now shown; a problem (the mean, a row it lacks) is said in place, not raised."""
        if not is_open:
            return gr.skip(), gr.skip()
        try:
            return cell(*args)
        except handlers.DemoInputError as error:
            return f"<p>{html.escape(str(error))}</p>", gr.skip()

    for number, api in ((look.query, dict(api_name="open_cell")), (look.key, dict(api_visibility="private")),
                        (look.all_dimensions, dict(api_visibility="private"))):
        number.input(shown_on_page(cell), cell_inputs, [look.cell, head_trace], trigger_mode="always_last", **api
                     ).failure(lambda: CELL_REFUSED, None, look.cell, api_visibility="private")  # no stale cell
    (look.cell_accordion.expand(lambda: True, None, cell_open, api_visibility="private")
     .then(follow_heatmap, [cell_open, *cell_inputs], [look.cell, head_trace], api_visibility="private"))
    look.cell_accordion.collapse(lambda: False, None, cell_open, api_visibility="private")
    page.head_plot.change(follow_heatmap, [cell_open, *cell_inputs], [look.cell, head_trace],
                          api_visibility="private")
    demo.load(None, js=heads.HEATMAP_CLICK_SCRIPT, api_visibility="private")

    @shown_on_page
    def switch_heads(result, cross_off, encoder_off, decoder_off, kind, layer, head):  # the switches' order
        view = heads.heads_off_view(directions, result, [*cross_off, *encoder_off, *decoder_off])
        return heads.heads_off_html(view), heads.heads_off_figure(view, kind, layer, head)

    @shown_on_page
    def which_heads_matter(result, progress=gr.Progress()):
        effects = heads.head_effects(directions, result, lambda done, total: progress(
            (done, total), desc="switching each head off alone"))
        return heads.head_effects_view(effects)

    look.run.click(switch_heads, [result_state, *look.switches, page.kind, page.layer, page.head],
                   [look.comparison, look.heads_off_plot], api_name="heads_off"
                   ).failure(lambda: ("", None), None, [look.comparison, look.heads_off_plot], api_visibility="private")
    look.all_on.click(lambda: ([],) * len(look.switches), None, look.switches, api_visibility="private")
    look.matter.click(which_heads_matter, [result_state], [look.matter_plot, look.matter_summary],
                      api_name="which_heads_matter"
                      ).failure(lambda: (None, ""), None, [look.matter_plot, look.matter_summary],
                                api_visibility="private")

    def lesson_steps():
        """The worked example's sentence in the real model: encoder self-attention, layer 1, head 1, cell (1, 1)."""
        return (LESSON_SENTENCE, default_direction, "encoder", "1", "1", 1, 1, gr.Accordion(open=True), True)

    prepared = lesson.real_model.click(
        lesson_steps, None, [page.source, page.direction, page.kind, page.layer, page.head, look.query, look.key,
                             look.cell_accordion, cell_open], js=SHOW_TRANSLATE_TAB, api_visibility="private")
    translated(prepared.then).then(None, js=SCROLL_TO_CELL, api_visibility="private")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 to accept other machines)")
    parser.add_argument("--port", type=PORT, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="TCP port to listen on (default 7860, or GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--model", action="append", dest="models", metavar="BUNDLE",
                        help=f"an exported bundle folder; repeat for more (default: every */onnx in {MODELS_DIR})")
    parser.add_argument("--max-queue", type=POSITIVE, default=64, help="requests that may wait; more are refused")
    parser.add_argument("--concurrency", type=POSITIVE, default=2, help="translations run at the same time")
    add_precision(parser)
    return parser


def port_in_use(host: str, port: int) -> bool:
    """Whether another program already listens on host:port (checked before the models are loaded). The probe
    binds as uvicorn does, with SO_REUSEADDR, so a port left in TIME_WAIT by a demo just stopped is free; on Windows
    that option would let the probe share a port that is in use, so it is left off there."""
    with socket.socket() as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """Load every model once, then serve the page until interrupted. Every mistake is one line naming its flag."""
    args = build_parser().parse_args(argv)
    if port_in_use(args.host, args.port):
        raise SystemExit(f"python -m demo: --port {args.port}: another program listens on {args.host}:{args.port}; "
                         "choose another --port")
    try:
        bundles = args.models or handlers.find_bundles(MODELS_DIR)
        directions = handlers.load_directions(bundles, precision=args.precision)
    except (OSError, ValueError, BundleError) as error:
        raise SystemExit(f"python -m demo: --model: {error}") from None
    print("models: " + ", ".join(f"{label} ({t.directory})" for label, t in directions.items()), flush=True)
    demo = build_demo(directions, max_queue=args.max_queue, concurrency=args.concurrency)
    try:
        _, local_url, share_url = demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                                              theme=THEME, css=CSS, show_error=True, footer_links=["api", "settings"],
                                              quiet=True, prevent_thread_lock=True)
    except OSError as error:  # the port was taken between the check and the launch
        raise SystemExit(f"python -m demo: --port {args.port}: {error}") from None
    print(f"the demo runs on {local_url}" + (f" and {share_url}" if share_url else
                                              " (add --share for a temporary public gradio.live link)"), flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
