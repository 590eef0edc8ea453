"""What the demo does, as plain functions that know nothing of Gradio (``demo.app`` lays them out).

Every shipped ONNX bundle becomes a direction ("English → German"); :func:`translate_text` translates one text with
every layer's and head's attention of the translation beam search chose, and says in ``notices`` what the user
should know (unknown characters, a cut input). :func:`attention_views` turns that result into the figures and the
alignment view; :func:`attention_json` into the downloadable record. Bad input raises :class:`DemoInputError` with a
message meant for the page.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.confidence import IN_DOMAIN, Confidence
from core.search import Attention, BeamRecord, Hypothesis
from serve import Translator
from serve.policy import InputLimits, fit_text, max_source_tokens
from serve.sentences import split_sentences

from . import figures, lesson

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}
# The project's input policy with the demo's numbers: 128 source tokens keep the heatmaps readable (the models read
# up to max_positions - 1); longer input is cut before a word, with a notice.
LIMITS = InputLimits(max_chars=2_000, max_tokens=128, max_beams=8)
ATTENTION_KINDS = {
    "cross": "Encoder–decoder (cross) attention",
    "encoder": "Encoder self-attention",
    "decoder": "Decoder self-attention",
}
MEAN = "mean"  # the head choice that averages over heads


class DemoInputError(ValueError):
    """Input the demo cannot translate; the message is written for the person who typed it."""


@dataclass(frozen=True)
class DemoTranslation:
    """One translation as the page shows it: the text, what to tell the user, and its attention."""

    direction: str
    model: str
    source: str  # the text that was translated (after any cut)
    text: str
    beam_size: int
    score: float
    notices: tuple[str, ...]
    attention: Attention
    confidence: Confidence | None = None  # how much the source looks like the training data (None: uncalibrated)
    hypothesis: Hypothesis | None = None  # the chosen (or a partial) hypothesis: ids, each token's log-prob, finished
    beams: BeamRecord | None = None  # every step of the beam search
    node: tuple[int, int] | None = None  # (step, candidate), 1-based, when this is a node's partial hypothesis

    @property
    def is_empty(self) -> bool:
        return not self.attention.target_tokens


def direction_label(translator: Translator) -> str:
    """"English → German" from the bundle's manifest (its folder name when the manifest has no languages)."""
    if translator.source_lang is None or translator.target_lang is None:
        return translator.name
    source, target = (LANGUAGE_NAMES.get(code, code) for code in (translator.source_lang, translator.target_lang))
    return f"{source} → {target}"


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Every exported bundle under models_dir (``models/<name>/onnx``), sorted by name."""
    bundles = sorted(path.parent for path in Path(models_dir).glob("*/onnx/manifest.json"))
    if not bundles:
        raise FileNotFoundError(f"no exported bundles (*/onnx/manifest.json) under {models_dir}")
    return bundles


def load_directions(bundle_dirs: Sequence[str | Path], precision: str = "float32") -> dict[str, Translator]:
    """Load each bundle once (``precision``: see :class:`serve.Translator`): {direction label: translator}, in the
    given order."""
    directions: dict[str, Translator] = {}
    for directory in bundle_dirs:
        translator = Translator(directory, precision=precision)
        label = direction_label(translator)
        if label in directions:
            raise ValueError(f"two bundles translate {label}: {directions[label].directory} and {directory}")
        directions[label] = translator
    return directions


def fit_source(translator: Translator, text: str) -> tuple[str, list[str]]:
    """The text cut to the demo's limits (:data:`LIMITS`, by the shared policy), and a notice for each cut."""
    fitted = fit_text(translator, text, LIMITS, cut=True)
    notices = []
    if fitted.chars_before is not None:
        notices.append(f"The input has {fitted.chars_before:,} characters; the demo reads the first "
                       f"{LIMITS.max_chars:,}.")
    if fitted.tokens_before is not None:
        notices.append(f"The input has {fitted.tokens_before} subword tokens; the demo translates at most "
                       f"{max_source_tokens(translator, LIMITS)}, so it was cut to: {code_span(fitted.text)}.")
    return fitted.text, notices


def translate_text(directions: Mapping[str, Translator], direction: str, text: str, beam_size: int = 5,
                   target_prefix: str | Sequence[str] | None = None, heads_off: Sequence = ()) -> DemoTranslation:
    """Translate text in one direction with beam search and keep every attention weight of the result and the
    record of the search; ``target_prefix`` (a text or subword tokens) is the start the translation must take;
    ``heads_off`` switches attention heads off for the whole search (checked entries, see :mod:`core.heads`).

    Raises DemoInputError for an unknown direction, a beam size outside 1..8, text that is empty, or a prefix the
    model cannot take (an unknown token, or as long as the longest translation of this text).
    """
    if direction not in directions:
        raise DemoInputError(f"Unknown direction {direction!r}; choose one of: {', '.join(directions)}.")
    if isinstance(beam_size, float) and beam_size.is_integer():
        beam_size = int(beam_size)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= LIMITS.max_beams:
        raise DemoInputError(f"The beam size must be a whole number from 1 to {LIMITS.max_beams}, got {beam_size!r}.")
    if not isinstance(text, str):
        raise DemoInputError("The input must be text.")
    translator = directions[direction]
    if not translator.tokenizer.normalize(text):
        raise DemoInputError("Type a sentence to translate (the input is empty).")
    source, notices = fit_source(translator, text)
    try:
        result = translator.translate([source], beam_size=beam_size, return_attention=True, record_beams=True,
                                      heads_off=heads_off,
                                      target_prefix=None if target_prefix is None else [target_prefix])[0]
    except ValueError as error:  # only the prefix can be refused here: the source fits and the options are checked
        message = str(error).replace("target_prefix[0]: ", "").replace("target_prefix[0]", "the start")
        raise DemoInputError(message[0].upper() + message[1:] + ".") from None
    if result.unknown_characters:
        count = result.unknown_characters
        notices.insert(0, f"{count} character{'s' if count > 1 else ''} of the input "
                          f"{'are' if count > 1 else 'is'} unknown to the model (never seen in training; shown as "
                          "`<unk>`) and ignored by the translation.")
    return DemoTranslation(direction=direction, model=translator.name, source=source, text=result.text,
                           beam_size=beam_size, score=result.score, notices=tuple(notices), attention=result.attention,
                           confidence=result.confidence, hypothesis=result.hypotheses[0], beams=result.beams)


@dataclass(frozen=True)
class Link:
    """What a link to a translation asks for: ``?text=…&direction=en-de&beam=5`` (the direction as the model's
    name or its label)."""

    text: str
    direction: str  # the label, "English → German"
    beam_size: int


def read_link(directions: Mapping[str, Translator], query: Mapping[str, str]) -> Link | None:
    """The translation a page's query string asks for, checked; None when it names no text. Raises DemoInputError
    for a direction the demo does not have or a beam size that is not a whole number from 1 to the limit."""
    text = query.get("text")
    if not text:
        return None
    asked = query.get("direction")
    names = {translator.name: label for label, translator in directions.items()}
    if asked is None:
        direction = next(iter(directions))
    elif asked in directions or asked in names:
        direction = names.get(asked, asked)
    else:
        raise DemoInputError(f"The link asks for the direction {asked!r}; this demo has: "
                             f"{', '.join(f'{name} ({label})' for name, label in names.items())}.")
    beam = query.get("beam", "5")
    if not (beam.isascii() and beam.isdecimal() and 1 <= int(beam) <= LIMITS.max_beams):
        raise DemoInputError(f"The link asks for the beam size {beam!r}; a whole number from 1 to "
                             f"{LIMITS.max_beams} is needed.")
    return Link(text, direction, int(beam))


def shown_name(result: DemoTranslation) -> str:
    """What the attention views show, in words: the whole translation or a node's partial hypothesis."""
    if result.node is None:
        return "the whole translation"
    step, index = result.node
    return f"step {step}, candidate {index} of the beam search (its partial hypothesis)"


@dataclass(frozen=True)
class DemoParagraph:
    """A text translated sentence by sentence (:func:`translate_paragraph`): each sentence's translation with its
    attention, and what to tell the user about the whole."""

    sentences: tuple[DemoTranslation, ...]
    notices: tuple[str, ...]

    @property
    def text(self) -> str:
        """The whole translation: the sentences' translations joined with a space."""
        return " ".join(sentence.text for sentence in self.sentences if sentence.text)


def translate_paragraph(directions: Mapping[str, Translator], direction: str, text: str,
                        beam_size: int = 5) -> DemoParagraph:
    """Translate a text sentence by sentence: the text is cut to the demo's characters, split into sentences by the
    project's one rule (:func:`serve.sentences.split_sentences`, in the model's source language), and each sentence
    translated as :func:`translate_text` does (cut to the demo's tokens, with a notice). Raises DemoInputError as
    translate_text does."""
    if not isinstance(text, str):
        raise DemoInputError("The input must be text.")
    translator = directions.get(direction)
    notices = []
    if len(text) > LIMITS.max_chars:
        notices.append(f"The input has {len(text):,} characters; the demo reads the first {LIMITS.max_chars:,}.")
        text = text[: LIMITS.max_chars]
    sentences = (split_sentences(text, translator.source_lang) if translator is not None else []) or [text]
    translations = tuple(translate_text(directions, direction, sentence, beam_size) for sentence in sentences)
    if len(translations) > 1:
        notices.append(f"The text was translated as {len(translations)} sentences, one at a time (the models learned "
                       "from single sentences); choose the sentence whose attention is shown below.")
    for number, sentence in enumerate(translations, start=1):
        notices.extend(notice if len(translations) == 1 else f"Sentence {number}: {notice}"
                       for notice in sentence.notices)
    return DemoParagraph(translations, tuple(notices))


def confidence_text(result: DemoTranslation | DemoParagraph) -> str:
    """The confidence as one plain line for the page and the API ("" when the model is not calibrated); for a
    paragraph, the least confident sentence's."""
    if isinstance(result, DemoParagraph):
        scored = [(sentence.confidence.score, number) for number, sentence in enumerate(result.sentences, 1)
                  if sentence.confidence is not None]
        if not scored:
            return ""
        score, number = min(scored)
        line = confidence_text(result.sentences[number - 1])
        return line if len(scored) == 1 else f"{line[:-1]}: sentence {number}, the lowest of {len(scored)})"
    confidence = result.confidence
    if confidence is None:
        return ""
    mark = "✓" if confidence.label == IN_DOMAIN else "⚠"  # text symbols: every system font has them
    return f"{mark} {confidence.message[0].upper()}{confidence.message[1:]} (confidence {confidence.score:.2f})"


def code_span(text: str) -> str:
    """text as a Markdown code span: shown literally on the page (no markup, no HTML), plain text in the API.

    A code span ends at a blank line (a paragraph break), which would let the rest of the text render as Markdown
    and HTML, so every line ending becomes a space first: the span holds the whole text, whatever it is."""
    text = re.sub(r"\r\n|\r|\n", " ", text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def notices_markdown(result: DemoTranslation | DemoParagraph) -> str:
    """The notices as a Markdown list ("" when there is nothing to say); anything the user typed is a code span."""
    return "\n".join(f"- ⚠ {notice}" for notice in result.notices)


def layer_count(result: DemoTranslation, kind: str) -> int:
    return getattr(result.attention, kind).shape[0]


def attention_matrix(result: DemoTranslation, kind: str, layer: int, head: str | int) -> np.ndarray:
    """One head's weights [queries, keys] of layer (1-based), or their mean over heads when head is "mean"."""
    weights = getattr(result.attention, kind)[layer - 1]  # [H, Q, K]
    return weights.mean(axis=0) if head == MEAN else weights[int(head) - 1]


def attention_rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) of self-attention weights [layers, heads, S, S].

    Each layer's mean over heads plus the identity (the residual connection), each row renormalized to sum to 1,
    multiplied from the first layer up: ``rollout[l] = Ã_l · … · Ã_1``. Returns [layers, S, S] (float64): row i of
    ``rollout[l]`` is how much position i after layer l + 1 draws on each input token.
    """
    weights = np.asarray(weights, dtype=np.float64)
    size = weights.shape[-1]
    mixed = weights.mean(axis=1) + np.eye(size)
    mixed /= np.maximum(mixed.sum(axis=-1, keepdims=True), 1e-12)
    rollout, through = np.eye(size), []
    for layer in mixed:
        rollout = layer @ rollout
        through.append(rollout)
    return np.stack(through) if through else np.zeros((0, size, size))


def query_key_tokens(result: DemoTranslation, kind: str) -> tuple[list[str], list[str]]:
    """The tokens on the query (row) and key (column) axes of an attention kind."""
    attention = result.attention
    return {
        "cross": (attention.target_tokens, attention.source_tokens),
        "encoder": (attention.source_tokens, attention.source_tokens),
        "decoder": (attention.decoder_input_tokens, attention.decoder_input_tokens),
    }[kind]


QUERY_TITLES = {"cross": "output token (query)", "encoder": "source token (query)",
                "decoder": "decoder input token (query)"}
KEY_TITLES = {"cross": "source token (key)", "encoder": "source token (key)", "decoder": "decoder input token (key)"}
# The alignment view's rows for each kind: the tokens that attend (queries), over the tokens they attend to (keys).
ALIGNMENT_LABELS = {"cross": ("output", "source"), "encoder": ("source token", "attends to source tokens"),
                    "decoder": ("decoder input", "attends to decoder inputs (itself and earlier)")}
ROLLOUT_TITLE = "Encoder attention rollout"


@dataclass(frozen=True)
class ViewWeights:
    """The matrix one choice of kind, layer, head (or rollout) shows, with its axes and names."""

    weights: np.ndarray  # [queries, keys]
    queries: list[str]
    keys: list[str]
    kind_title: str  # "Encoder self-attention", or the rollout's
    name: str  # "layer 2 · head 3", "layer 1 · mean over heads", "through layer 2 (mean of heads, residual added)"


def view_weights(result: DemoTranslation, kind: str, layer: int, head: str | int,
                 rollout: bool = False) -> ViewWeights:
    """The weights of one attention kind, layer (1-based) and head (1-based or "mean"); with ``rollout`` (the
    encoder's only) the attention rollout through that layer instead, for which the head does not matter.

    Raises DemoInputError for an unknown kind, layer or head."""
    if kind not in ATTENTION_KINDS:
        raise DemoInputError(f"Unknown attention kind {kind!r}; choose one of: {', '.join(ATTENTION_KINDS)}.")
    if rollout and kind != "encoder":
        raise DemoInputError("Rollout is an option of the encoder self-attention view.")
    layers = layer_count(result, kind)
    if not 1 <= int(layer) <= layers:
        raise DemoInputError(f"Layer {layer} does not exist; this model has {layers}.")
    heads = getattr(result.attention, kind).shape[1]
    if head != MEAN and not 1 <= int(head) <= heads:
        raise DemoInputError(f"Head {head} does not exist; this model has {heads} per layer.")
    layer = int(layer)
    queries, keys = query_key_tokens(result, kind)
    if rollout:
        return ViewWeights(attention_rollout(result.attention.encoder)[layer - 1], queries, keys, ROLLOUT_TITLE,
                           f"through layer {layer} (mean of heads, residual added)")
    head_name = "mean over heads" if head == MEAN else f"head {head}"
    return ViewWeights(attention_matrix(result, kind, layer, head), queries, keys, ATTENTION_KINDS[kind],
                       f"layer {layer} · {head_name}")


def view_heatmap(view: ViewWeights, kind: str, *, top: float | None = None) -> object:
    """The heatmap of one view, titled by its kind and name (``top``: a colour scale shared with another view)."""
    return figures.attention_heatmap(view.weights, view.queries, view.keys, title=f"{view.kind_title}<br>{view.name}",
                                     query_title=QUERY_TITLES[kind], key_title=KEY_TITLES[kind], top=top)


@dataclass(frozen=True)
class AttentionViews:
    """What the page draws for one choice of kind, layer and head."""

    head_figure: object  # plotly Figure: the chosen head (or the mean, or the rollout)
    heads_figure: object  # plotly Figure: every head of the layer and their mean (or the rollout through each layer)
    alignment_html: str  # the kind's query tokens over its key tokens, shaded by the chosen head's weights


def attention_views(result: DemoTranslation, kind: str, layer: int, head: str | int,
                    rollout: bool = False) -> AttentionViews:
    """The heatmaps of one attention kind, layer (1-based) and head (1-based or "mean"), and the alignment view;
    with ``rollout`` the encoder's attention rollout through that layer, and through every layer as small
    multiples."""
    view = view_weights(result, kind, layer, head, rollout)
    if rollout:
        through = attention_rollout(result.attention.encoder)
        panels = [(f"through layer {n}", matrix) for n, matrix in enumerate(through, start=1)]
        grid_title = f"{ROLLOUT_TITLE}<br>through each layer"
    else:
        weights = getattr(result.attention, kind)[int(layer) - 1]
        panels = [(f"head {h}", matrix) for h, matrix in enumerate(weights, start=1)] + [("mean", weights.mean(0))]
        grid_title = f"{ATTENTION_KINDS[kind]}<br>layer {layer}: every head and their mean"
    heads_figure = figures.small_multiples(panels, view.queries, view.keys, title=grid_title)
    query_label, key_label = ALIGNMENT_LABELS[kind]
    alignment = figures.alignment_html(view.queries, view.keys, view.weights, query_label=query_label,
                                       key_label=key_label, caption=f"{view.kind_title.lower()}, {view.name}")
    return AttentionViews(view_heatmap(view, kind), heads_figure, alignment)


def attention_record(result: DemoTranslation) -> dict:
    """The translation and all its attention weights as a JSON-ready dict (weights rounded to 6 decimals)."""
    attention = result.attention
    arrays = {kind: getattr(attention, kind) for kind in ATTENTION_KINDS}
    return {
        "model": result.model,
        "direction": result.direction,
        "settings": {"beam_size": result.beam_size},
        "source": result.source,
        "translation": result.text,
        "score": result.score,
        "notices": list(result.notices),
        "source_tokens": attention.source_tokens,
        "target_tokens": attention.target_tokens,
        "decoder_input_tokens": attention.decoder_input_tokens,
        "shapes": {kind: list(array.shape) for kind, array in arrays.items()},
        "axes": {"encoder": "[layers, heads, source, source]", "decoder": "[layers, heads, target, target]",
                 "cross": "[layers, heads, target, source]"},
        "attention": {kind: np.round(array.astype(np.float64), 6).tolist() for kind, array in arrays.items()},
    }


def write_attention_json(result: DemoTranslation, folder: str | Path, keep_seconds: float = 3600.0) -> Path:
    """Write :func:`attention_record` to a new file in folder; files older than keep_seconds are removed first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.glob("translation-*.json"):
        if now - old.stat().st_mtime > keep_seconds:
            old.unlink(missing_ok=True)
    path = folder / f"translation-{result.model}-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(attention_record(result), ensure_ascii=False), encoding="utf-8")
    return path


def worked_example_view(seed: int) -> tuple[str, object]:
    """The article's worked example for a seed: each step as a labelled table (HTML), and the weights heatmap."""
    try:
        example = lesson.worked_example(seed)
    except ValueError as error:
        raise DemoInputError(str(error).capitalize() + ".") from error
    tokens = list(example.tokens)
    dims = [f"d{i + 1}" for i in range(example.inputs.shape[1])]
    table = figures.matrix_table
    steps = [
        ("1. Embeddings plus positional vectors: X = E + P",
         [table(example.embeddings, tokens, dims, title="E (embeddings)"),
          table(example.position_vectors, tokens, dims, title="P (positional vectors)"),
          table(example.inputs, tokens, dims, title="X = E + P")]),
        (f"2. Projections with random weights (seed {example.seed}): Q = X W^Q, K = X W^K, V = X W^V",
         [table(example.w_query, dims, dims, title="W^Q"), table(example.w_key, dims, dims, title="W^K"),
          table(example.w_value, dims, dims, title="W^V")]),
        ("", [table(example.query, tokens, dims, title="Q"), table(example.key, tokens, dims, title="K"),
              table(example.value, tokens, dims, title="V")]),
        (f"3. Scores QK^T, then divided by sqrt(d_k) = sqrt({example.d_k}) = {math.sqrt(example.d_k):.3f}",
         [table(example.scores, tokens, tokens, title="QK^T (query row, key column)"),
          table(example.scaled_scores, tokens, tokens, title="QK^T / sqrt(d_k)")]),
        ("4. Softmax of each row: the attention weights (each row sums to 1), and the weighted sum of V",
         [table(example.weights, tokens, tokens, title="softmax(QK^T / sqrt(d_k))"),
          table(example.output, tokens, dims, title="Attention(Q, K, V) = weights · V")]),
    ]
    sections = "".join(
        (f"<h4>{html.escape(heading)}</h4>" if heading else "") + f"<div class='matrix-row'>{''.join(tables)}</div>"
        for heading, tables in steps)
    figure = figures.attention_heatmap(example.weights, tokens, tokens, title="The attention weights of the example",
                                       query_title="query", key_title="key")
    return f"<div class='lesson'>{sections}</div>", figure


def positional_encoding_view(length: int, d_model: int) -> object:
    """The plot of the model's sinusoidal positional encoding for length positions and d_model dimensions."""
    try:
        table = lesson.positional_encoding(int(length), int(d_model))
    except (TypeError, ValueError) as error:
        raise DemoInputError(str(error).capitalize() + ".") from error
    return figures.positional_encoding_figure(table)
