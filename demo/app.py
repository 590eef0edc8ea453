"""The Gradio app: translate, then inspect every layer's and head's attention of that translation.

``python -m demo`` runs :func:`main`; :func:`build_demo` lays the handlers of :mod:`demo.handlers` out in a
``gr.Blocks`` and is what tests launch. Only ``gr.Error`` reaches the page, so handler errors are turned into it here.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from serve import BundleError, Translator
from serve.arguments import PORT, POSITIVE

from . import figures, handlers

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
EXAMPLES = [  # Multi30K-like image descriptions, written for the demo (not taken from the data set)
    ("English → German", "Two young children are playing with a red ball on the grass."),
    ("English → German", "A man in a blue jacket is riding his bicycle down a busy street."),
    ("English → German", "A brown dog jumps over a log in the forest."),
    ("German → English", "Eine Frau mit Sonnenbrille sitzt auf einer Bank im Park."),
    ("German → English", "Drei Männer arbeiten auf einer Baustelle neben der Straße."),
    ("German → English", "Ein kleines Mädchen spielt im Sand am Strand."),
]
INTRO = """# attention-mt: watch every attention head translate

A Transformer written from *Attention Is All You Need*, small enough to run on any CPU (ONNX, no torch). Translate a
sentence, then look inside: the encoder's self-attention, the decoder's self-attention and the encoder–decoder
attention of **the translation beam search chose**, for every layer and every head.

**Know the domain:** both models were trained only on [Multi30K](https://github.com/multi30k/dataset): 29,000
short descriptions of everyday photos (people, animals, streets, sports). They translate such sentences well; on
news, chat or technical text they will make confident mistakes. The **Confidence** line under each translation says
when a sentence looks outside what the model knows."""
LESSON_INTRO = """The article's worked example: the sentence **"Transformer is powerful"**, three tokens with
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
CSS = """.dark #alignment .alignment { --alignment-rgb: 125, 178, 255; }
#head-plot { overflow-x: auto; }"""  # a heatmap of many tokens scrolls sideways in its box, labels apart


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
        result = handlers.translate_text(directions, direction, text, beam_size)
        return result.text, handlers.confidence_text(result), handlers.notices_markdown(result), result

    @shown_on_page
    def views(result: handlers.DemoTranslation | None, kind: str, layer: str, head: str):
        if result is None:
            return (gr.skip(),) * 5
        layers = handlers.layer_count(result, kind)
        layer = str(min(int(layer), layers))
        drawn = handlers.attention_views(result, kind, int(layer), head)
        return (drawn.head_figure, drawn.heads_figure, drawn.alignment_html,
                gr.update(choices=[str(n) for n in range(1, layers + 1)], value=layer), gr.update(visible=True))

    def clear_result():
        return ("", "", "", None, None, None, "<p>Nothing translated: see the message above.</p>",
                gr.update(value=None, visible=False))

    def export(result: handlers.DemoTranslation | None):
        if result is None:
            return gr.skip()
        return gr.update(value=str(handlers.write_attention_json(result, export_dir)), visible=True)

    worked_example = shown_on_page(handlers.worked_example_view)
    positional_encoding = shown_on_page(handlers.positional_encoding_view)

    with gr.Blocks(title="attention-mt: watch every attention head translate", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        result_state = gr.State(None)
        with gr.Tab("Translate"):  # short tab names: both stay visible on a phone, not behind a "…" menu
            page = translate_tab(directions, default_direction, examples, first)
        with gr.Tab("How attention works"):
            lesson = lesson_tab(first)

        view_inputs = [result_state, page.kind, page.layer, page.head]
        view_outputs = [page.head_plot, page.heads_plot, page.alignment, page.layer, page.head]
        cleared = [page.translation, page.confidence, page.notices, result_state, page.head_plot, page.heads_plot,
                   page.alignment, page.download]
        for trigger, api in ((page.translate_button.click, dict(api_name="translate")),
                             (page.source.submit, dict(api_visibility="private")),
                             (page.examples.load_input_event.then, dict(api_visibility="private"))):
            event = trigger(translate, [page.source, page.direction, page.beam_size],
                            [page.translation, page.confidence, page.notices, result_state], **api)
            event.failure(clear_result, None, cleared, api_visibility="private")  # no stale result under an error
            (event.success(views, view_inputs, view_outputs, api_visibility="private")
             .success(export, [result_state], [page.download], api_visibility="private"))
        for control in (page.kind, page.layer, page.head):
            control.input(views, view_inputs, view_outputs, api_visibility="private")
        # One event per control: Enter, blur, arrow keys and drag all change the value; the last one wins.
        lesson.seed.change(worked_example, [lesson.seed], [lesson.html, lesson.plot], api_name="worked_example",
                           trigger_mode="always_last")
        pe_inputs = [lesson.pe_length, lesson.pe_d_model]
        lesson.pe_length.change(positional_encoding, pe_inputs, [lesson.pe_plot], api_name="positional_encoding",
                                trigger_mode="always_last")
        lesson.pe_d_model.change(positional_encoding, pe_inputs, [lesson.pe_plot], api_visibility="private",
                                 trigger_mode="always_last")
    return demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)


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
                                  info=f"1 is greedy search; whole numbers 1–{handlers.LIMITS.max_beams} (a typed "
                                       "value outside is clamped)", elem_id="beam-size")
            translate_button = gr.Button("Translate", variant="primary", elem_id="translate")
    translation = gr.Textbox(label="Translation", interactive=False, elem_id="translation", buttons=["copy"])
    confidence = gr.Textbox(label="Confidence", interactive=False, elem_id="confidence", lines=1,
                            info="Does the sentence look like the captions the model learned from? Calibrated on "
                                 "Multi30K (in) and everyday sentences, other languages and noise (out).")
    notices = gr.Markdown(label="Notices", elem_id="notices")
    examples = gr.Examples(examples, inputs=[direction, source], cache_examples=False,
                           label="Examples (Multi30K-like): click one to translate it")

    gr.Markdown("### Inspect the attention of this translation")
    with gr.Row():
        kind = gr.Radio([(label, key) for key, label in handlers.ATTENTION_KINDS.items()], value="cross",
                        label="Attention", elem_id="kind", scale=3)
        layer = gr.Dropdown([str(n) for n in range(1, first.n_decoder_layers + 1)], value="1",
                            label="Layer", elem_id="layer", scale=1, min_width=100)
        head = gr.Dropdown(head_choices(first.n_heads), value=handlers.MEAN, label="Head", elem_id="head",
                           scale=1, min_width=140)
    alignment = gr.HTML("<p>Translate a sentence to see which source tokens each output token attends "
                        "to.</p>", css_template=figures.ALIGNMENT_CSS, js_on_load=figures.ALIGNMENT_SCRIPT,
                        elem_id="alignment", padding=True)
    # The figures carry their own titles: Gradio's label badge would sit on them.
    head_plot = gr.Plot(label="Chosen head", show_label=False, elem_id="head-plot")
    heads_plot = gr.Plot(label="All heads of the layer", show_label=False, elem_id="heads-plot")
    download = gr.DownloadButton("Download the translation and all attention weights (JSON)",
                                 visible=False, elem_id="download")
    return SimpleNamespace(source=source, direction=direction, beam_size=beam_size, translate_button=translate_button,
                           translation=translation, confidence=confidence, notices=notices, examples=examples,
                           kind=kind, layer=layer, head=head,
                           alignment=alignment, head_plot=head_plot, heads_plot=heads_plot, download=download)


def lesson_tab(first) -> SimpleNamespace:
    """The worked example and the positional encoding, laid out inside the current Blocks."""
    lesson_html, lesson_figure = handlers.worked_example_view(0)
    gr.Markdown(LESSON_INTRO)
    seed = gr.Number(value=0, label="Seed of W^Q, W^K, W^V", info=f"a whole number from 0 to {2**32 - 1}",
                     elem_id="seed")
    html = gr.HTML(lesson_html, label="Worked example", css_template=LESSON_CSS, js_on_load=None, elem_id="lesson")
    plot = gr.Plot(lesson_figure, label="Attention weights", show_label=False, elem_id="lesson-plot")
    gr.Markdown("### Sinusoidal positional encoding\n"
                "PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), "
                "computed by the project's own `core.positional.sinusoidal_table` (the table the model adds "
                f"to its embeddings; the shipped models use d_model = {first.d_model}).")
    with gr.Row():
        pe_length = gr.Slider(1, 512, value=64, step=1, label="Positions", elem_id="pe-length",
                              info="1–512; a typed value outside is clamped")
        pe_d_model = gr.Slider(2, 512, value=first.d_model, step=2, label="d_model", elem_id="pe-d-model",
                               info="an even number, 2–512; a typed value outside is clamped")
    pe_plot = gr.Plot(handlers.positional_encoding_view(64, first.d_model), label="Positional encoding",
                      show_label=False, elem_id="pe-plot")
    return SimpleNamespace(seed=seed, html=html, plot=plot, pe_length=pe_length, pe_d_model=pe_d_model,
                           pe_plot=pe_plot)


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
    return parser


def port_in_use(host: str, port: int) -> bool:
    """Whether another program already listens on host:port (checked before the models are loaded)."""
    with socket.socket() as probe:
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
        directions = handlers.load_directions(bundles)
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
