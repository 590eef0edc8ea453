"""Single heads, for real (no Gradio): the computation behind one attention weight, and heads switched off.

:func:`open_cell` shows the numbers behind one cell (query i, key j) of one head's heatmap: the sublayer's input row
x_i, q_i, the head's K and V, the scores, the softmax row, the weighted sum of V and the head's share of the output
through W^O, all taken from the model's own trace of that translation (``translate(..., return_trace=True)``).
:func:`heads_off_view` translates again with chosen heads switched off and says what changed; :func:`head_effects`
switches each head off alone and measures what that costs the original translation (teacher-forced).
Bad input raises :class:`demo.handlers.DemoInputError`.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.config import TransformerConfig
from core.heads import HEAD_KINDS, parse_head
from core.search import trace_of
from serve import Translator

from . import figures, handlers, lesson

SHOWN = 8  # dimensions shown of each vector unless all are asked for
CELL_CSS = """
.cell-view h4 { font-size: 1em; margin: 0.9em 0 0.4em; }
.cell-view .scroll { max-width: 100%; overflow-x: auto; }
.cell-view table.matrix caption { text-align: left; }
.cell-view table.matrix td { white-space: nowrap; }
.cell-view td.marked, .cell-view tr.marked td { background-color: rgba(37, 99, 235, 0.22); font-weight: 600; }
.cell-view .check { font-size: 0.9em; opacity: 0.85; }
"""  # added to the lesson's table styles (demo.app.LESSON_CSS)
DemoInputError = handlers.DemoInputError
SHORT_KIND_NAMES = {"encoder": "encoder self", "decoder": "decoder self", "cross": "cross"}
KIND_NAMES = {"encoder": "encoder self-attention", "decoder": "decoder self-attention", "cross": "cross-attention"}

# Runs in the page once it loads: a click (a tap) on a cell of the chosen head's heatmap opens the cell view if it is
# closed and types the cell's row and column into its query and key inputs, as the keyboard would; plotly keeps the
# cell under the pointer in the figure's hover data. A redrawn figure gets the listener again.
HEATMAP_CLICK_SCRIPT = """() => {
  const pick = async (row, column) => {
    const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const label = document.querySelector('#cell-accordion .label-wrap');
    if (label && !label.classList.contains('open')) {
      label.click();  // its inputs are drawn when it opens
      for (let tries = 0; tries < 100 && !document.querySelector('#cell-key input'); tries++) await pause(20);
    }
    // Typed again until both keep their value (a redraw can put back the old one), but never over a value that
    // someone typed since: only an input that shows again what it showed before this click is typed again.
    const before = {};
    for (let tries = 0; tries < 10; tries++) {
      let kept = true;
      for (const [id, value] of [['cell-query', row + 1], ['cell-key', column + 1]]) {
        const input = document.querySelector(`#${id} input`);
        if (!input || input.value === String(value)) continue;
        if (id in before && input.value !== before[id]) continue;  // changed by the visitor: theirs now
        kept = false;
        if (!(id in before)) before[id] = input.value;
        input.value = String(value);
        input.dispatchEvent(new Event('input', {bubbles: true}));
      }
      if (kept) break;
      await pause(200);
    }
    document.getElementById('cell-accordion').scrollIntoView({block: 'start'});
  };
  const listen = () => {
    const plot = document.querySelector('#head-plot .js-plotly-plot');
    if (!plot || !plot.on || plot._cellClick === plot._ev) return;
    plot._cellClick = plot._ev;
    plot.on('plotly_click', (data) => {
      const point = data && data.points && data.points[0];
      if (point && Array.isArray(point.pointNumber)) pick(point.pointNumber[0], point.pointNumber[1]);
    });
  };
  new MutationObserver(listen).observe(document.body, {childList: true, subtree: true});
  listen();
}"""

def translation_key(result: handlers.DemoTranslation) -> tuple:
    """What identifies a translation: its direction, source, beam size and tokens."""
    return (result.direction, result.source, result.beam_size, tuple(result.attention.target_tokens))


@dataclass(frozen=True)
class HeadTrace:
    """One head's part of a translation's trace: all that any cell of its heatmap needs (a session keeps one)."""

    translation: tuple  # translation_key of the translation it belongs to
    kind: str
    layer: int  # 1-based
    head: int  # 1-based
    inputs: np.ndarray  # [Lq, D] the sublayer's input rows (after LayerNorm)
    queries: np.ndarray  # [Lq, d_head]
    keys: np.ndarray  # [Lk, d_head]
    values: np.ndarray  # [Lk, d_head]
    heads: np.ndarray  # [Lq, d_head] the head's output softmax(q K^T / sqrt(d_head)) V
    head_outputs: np.ndarray  # [Lq, D] its share of the sublayer's output through W^O


@dataclass(frozen=True)
class Cell:
    """The computation behind one attention weight: query i attends to key j in one head (indices 0-based)."""

    kind: str
    layer: int  # 1-based
    head: int  # 1-based
    query: int
    key: int
    query_tokens: list[str]
    key_tokens: list[str]
    x: np.ndarray  # [D] the sublayer's input row of the query (after LayerNorm)
    q: np.ndarray  # [d_head] q_i = x_i W^Q of the head
    keys: np.ndarray  # [Lk, d_head]
    values: np.ndarray  # [Lk, d_head]
    scores: np.ndarray  # [Lk] q_i . k_j; -inf where the decoder may not look (later positions)
    scaled: np.ndarray  # [Lk] scores / sqrt(d_head)
    weights: np.ndarray  # [Lk] the softmax row
    heatmap_row: np.ndarray  # [Lk] the same row as the heatmap shows it (return_attention)
    output: np.ndarray  # [d_head] weights @ values, as the model computed it (the trace)
    share: np.ndarray  # [D] the head's share of the sublayer's output through W^O

    @property
    def d_head(self) -> int:
        return self.q.shape[0]


def check_index(value, count: int, name: str, has: str) -> int:
    """A 1-based index from the page (a number or digits) as 0-based; DemoInputError unless a whole number from 1
    to count (the message says what ``has`` count of them: "this heatmap has 13 rows")."""
    if value is None or value == "":
        raise DemoInputError(f"Choose a {name.lower()} from 1 to {count}.")
    if isinstance(value, str) and value.isdecimal() and value.isascii():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= count:
        raise DemoInputError(f"{name} {value!r} does not exist; {has.format(count)} (1–{count}).")
    return value - 1


def head_trace(translator: Translator, result: handlers.DemoTranslation, kind: str, layer: int,
               head: int) -> HeadTrace:
    """One head's part of the translation's trace, from one teacher-forced pass over its tokens (the pass
    ``translate(..., return_trace=True)`` makes, without searching again)."""
    source = translator.tokenizer.encode(result.source) + [translator.config.eos_id]
    (found,) = trace_of(translator.backend, [source], [result.hypothesis])
    trace = found.of(kind)
    l, h = layer - 1, head - 1
    return HeadTrace(translation_key(result), kind, layer, head, trace.inputs[l], trace.queries[l, h],
                     trace.keys[l, h], trace.values[l, h], trace.heads[l, h], trace.head_outputs[l, h])


def open_cell(directions: Mapping[str, Translator], result: handlers.DemoTranslation | None, kind: str, layer,
              head, query, key, cached: HeadTrace | None = None) -> tuple[Cell, HeadTrace]:
    """The computation behind the weight of query ``query`` on key ``key`` (1-based, as the heatmap numbers its
    rows and columns) in one head of one layer (1-based) of an attention kind, with the head's trace to keep.

    ``cached`` is the head trace kept from the last call: reused when it is this translation's and head's,
    otherwise computed again (one teacher-forced pass). Raises DemoInputError for no translation, a head that is
    not one head (the mean) and any index out of range.
    """
    if result is None:
        raise DemoInputError("Translate a sentence first: a cell belongs to a translation's heatmap.")
    if result.is_empty:
        raise DemoInputError("The translation is empty: its heatmaps have no cells.")
    if kind not in handlers.ATTENTION_KINDS:
        raise DemoInputError(f"Unknown attention kind {kind!r}; choose one of: {', '.join(handlers.ATTENTION_KINDS)}.")
    weights = getattr(result.attention, kind)  # [L, H, Q, K]
    if head == handlers.MEAN:
        raise DemoInputError("The heatmap shows the mean over heads; choose one head to open one of its cells.")
    layer = check_index(layer, weights.shape[0], "Layer", "this model has {} layers") + 1
    head = check_index(head, weights.shape[1], "Head", "this model has {} heads per layer") + 1
    i = check_index(query, weights.shape[2], "Query", "this heatmap has {} rows")
    j = check_index(key, weights.shape[3], "Key", "this heatmap has {} columns")
    if cached is None or (cached.translation, cached.kind, cached.layer, cached.head) != (
            translation_key(result), kind, layer, head):
        cached = head_trace(directions[result.direction], result, kind, layer, head)
    scores = cached.keys @ cached.queries[i]
    if kind == "decoder":  # causal: a step sees itself and earlier steps only
        scores = np.where(np.arange(scores.shape[0]) <= i, scores, -np.inf)
    scaled = scores / math.sqrt(cached.queries.shape[1])
    queries, keys = handlers.query_key_tokens(result, kind)
    cell = Cell(kind, layer, head, i, j, queries, keys, cached.inputs[i], cached.queries[i], cached.keys,
                cached.values, scores, scaled, lesson.softmax_rows(scaled[None])[0],
                weights[layer - 1, head - 1, i], cached.heads[i], cached.head_outputs[i])
    return cell, cached


def cell_html(cell: Cell, all_dimensions: bool = False, shown: str = "the whole translation") -> str:
    """The cell's computation step by step as labelled tables (the first 8 dimensions unless all_dimensions), for
    the heatmap of ``shown`` (:func:`demo.handlers.shown_name`)."""
    table = figures.matrix_table
    d_model, d_head = cell.x.shape[0], cell.d_head
    model_dims, head_dims = (d_model, d_head) if all_dimensions else (min(SHOWN, d_model), min(SHOWN, d_head))

    def dims(count: int) -> list[str]:
        return [f"d{n}" for n in range(1, count + 1)]

    def of(count: int, total: int) -> str:
        return f"all {total}" if count == total else f"first {count} of {total}"

    query_token, key_token = cell.query_tokens[cell.query], cell.key_tokens[cell.key]
    query_label = [f"{cell.query + 1}·{query_token}"]
    key_labels = [f"{n}·{token}" for n, token in enumerate(cell.key_tokens, start=1)]
    root = math.sqrt(d_head)
    steps_table = np.stack([cell.scores, cell.scaled, cell.weights, cell.heatmap_row], axis=1)
    difference = float(np.max(np.abs(cell.weights - cell.heatmap_row)))
    recomputed = cell.weights @ cell.values
    masked = (" Keys after the query are masked (the decoder may not look ahead): score −∞, weight 0."
              if cell.kind == "decoder" else "")
    source = "the encoder's output (memory)" if cell.kind == "cross" else "the same sublayer input"
    steps = [
        (f"1. x_i: the sublayer's input for query {cell.query + 1} ({query_token}), after LayerNorm "
         f"({of(model_dims, d_model)} dimensions)",
         [table(cell.x[None, :model_dims], query_label, dims(model_dims), title="x_i")]),
        (f"2. q_i = x_i W^Q of head {cell.head} ({of(head_dims, d_head)} dimensions); K = X W^K and V = X W^V "
         f"from {source}, one row per key (key {cell.key + 1} marked)",
         [table(cell.q[None, :head_dims], query_label, dims(head_dims), title="q_i"),
          table(cell.keys[:, :head_dims], key_labels, dims(head_dims), title="K",
                marked_row=cell.key),
          table(cell.values[:, :head_dims], key_labels, dims(head_dims), title="V",
                marked_row=cell.key)]),
        (f"3. Scores q_i·k_j over all {d_head} dimensions, divided by sqrt(d_k) = sqrt({d_head}) = {root:.3f}, "
         f"then the softmax of the row: the weights.{masked}",
         [table(steps_table, key_labels, ["q_i·k_j", f"/ {root:.3f}", "softmax", "heatmap"],
                title="the row of query " + str(cell.query + 1), digits=4, marked_row=cell.key)]),
        (f"4. The head's output: the weighted sum of V, Σ_j w_j v_j ({of(head_dims, d_head)} dimensions), and "
         f"its share of the sublayer's output through W^O ({of(model_dims, d_model)}); the sublayer's output is "
         "the sum of every head's share plus W^O's bias",
         [table(cell.output[None, :head_dims], query_label, dims(head_dims), title="Σ_j w_j v_j"),
          table(cell.share[None, :model_dims], query_label, dims(model_dims), title="share through W^O")]),
    ]
    sections = "".join(f"<h4>{html.escape(heading)}</h4><div class='matrix-row'>"
                       + "".join(f"<div class='scroll'>{part}</div>" for part in parts) + "</div>"
                       for heading, parts in steps)
    summary = (f"<p class='check'>The heatmap of {html.escape(shown)}.</p>"
               f"<p><b>{html.escape(KIND_NAMES[cell.kind].capitalize())}, layer {cell.layer}, head {cell.head}:</b> "
               f"query {cell.query + 1} ({html.escape(query_token)}) gives key {cell.key + 1} "
               f"({html.escape(key_token)}) the weight <b>{cell.weights[cell.key]:.4f}</b>.</p>")
    check = (f"<p class='check'>Checks: the softmax row differs from the heatmap's row by at most {difference:.1e}; "
             f"the weighted sum recomputed here differs from the model's head output by at most "
             f"{float(np.max(np.abs(recomputed - cell.output))):.1e}. Every number is the model's own, from "
             "one teacher-forced pass over this translation's tokens.</p>")
    return f"<div class='cell-view'>{summary}{sections}{check}</div>"


# ---- heads off ------------------------------------------------------------------------------------------------

def head_choices(config: TransformerConfig, kind: str) -> list[tuple[str, str]]:
    """The switches of one kind: ("L1 H1", "kind.0.0") … (labels 1-based, values the ``heads_off`` syntax)."""
    layers = config.n_encoder_layers if kind == "encoder" else config.n_decoder_layers
    return [(f"L{layer + 1} H{head + 1}", f"{kind}.{layer}.{head}") for layer in range(layers)
            for head in range(config.n_heads)]


def checked_heads(translator: Translator, heads_off: Sequence[str]) -> list[tuple[str, int, int]]:
    """The heads named by ``heads_off`` ("kind.layer.head", 0-based), checked against the model."""
    checked = []
    for entry in heads_off:
        try:
            checked.append(parse_head(entry, translator.config))
        except ValueError as error:
            raise DemoInputError(f"Head {entry!r}: {error}.") from None
    return checked


def token_log_probs(result: handlers.DemoTranslation) -> list[tuple[str, float]]:
    """Each output token (</s> included when the hypothesis finished) with its log-probability."""
    return list(zip(result.attention.target_tokens, result.hypothesis.token_log_probs))


@dataclass(frozen=True)
class HeadsOff:
    """A translation with some heads switched off, beside the original."""

    original: handlers.DemoTranslation
    changed: handlers.DemoTranslation
    heads_off: list[tuple[str, int, int]]


def heads_off_view(directions: Mapping[str, Translator], result: handlers.DemoTranslation | None,
                   heads_off: Sequence[str]) -> HeadsOff:
    """Translate the same source, beam size and direction again with ``heads_off`` ("kind.layer.head", 0-based)
    switched off for the whole search. DemoInputError without a translation or for a head the model lacks."""
    if result is None:
        raise DemoInputError("Translate a sentence first: heads are switched off for that translation.")
    checked = checked_heads(directions[result.direction], heads_off)
    changed = handlers.translate_text(directions, result.direction, result.source, result.beam_size,
                                      heads_off=checked)
    return HeadsOff(result, changed, checked)


def heads_name(heads: Sequence[tuple[str, int, int]]) -> str:
    return ", ".join(f"{KIND_NAMES[kind]} L{layer + 1} H{head + 1}" for kind, layer, head in heads) or "none"


def heads_off_html(view: HeadsOff) -> str:
    """The new translation next to the original, token by token with each token's log-probability."""
    before, after = token_log_probs(view.original), token_log_probs(view.changed)
    rows = []
    for step in range(max(len(before), len(after))):
        old = before[step] if step < len(before) else ("", None)
        new = after[step] if step < len(after) else ("", None)
        same = old[0] == new[0]
        delta = f"{new[1] - old[1]:+.3f}" if same and old[1] is not None else ""
        mark = "" if same else " class='marked'"
        cells = [html.escape(old[0]), "" if old[1] is None else f"{old[1]:.3f}",
                 html.escape(new[0]), "" if new[1] is None else f"{new[1]:.3f}", delta]
        rows.append(f"<tr{mark}><th>{step + 1}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    total_before = sum(p for _, p in before)
    total_after = sum(p for _, p in after)
    words_before = sum(p for token, p in before if token != "</s>")  # which heads matter scores these (no </s>)
    verdict = ("The translation is the same." if view.changed.text == view.original.text
               else "The translation changed (changed tokens are marked).")
    return (f"<div class='cell-view'><p><b>Heads off:</b> {html.escape(heads_name(view.heads_off))}.</p>"
            f"<p><b>Original:</b> {html.escape(view.original.text)} (log P {total_before:.3f} with &lt;/s&gt;, "
            f"{words_before:.3f} without it as <b>Which heads matter?</b> scores it)<br>"
            f"<b>Heads off:</b> {html.escape(view.changed.text)} (log P {total_after:.3f})</p><p>{verdict}</p>"
            "<div class='scroll'><table class='matrix'><caption>each token's log-probability, before and after"
            "</caption><thead><tr><th>#</th><th>original</th><th>log p</th><th>heads off</th><th>log p</th>"
            f"<th>change</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div></div>")


def heads_off_figure(view: HeadsOff, kind: str, layer, head) -> object:
    """The heatmap of the new translation for the page's kind, layer and head (:func:`handlers.attention_views`)."""
    figure = handlers.attention_views(view.changed, kind, int(layer), head).head_figure
    kind_line, rest = figure.layout.title.text.split("<br>", 1)
    figure.update_layout(title_text=f"{kind_line}<br>heads off · {rest}")
    return figure


@dataclass(frozen=True)
class HeadEffects:
    """What switching each head off alone costs the original translation: the change of its log-probability."""

    tokens: list[str]  # the scored tokens (the translation without </s>)
    log_prob: float  # their log-probability with every head on
    changes: dict[str, np.ndarray]  # kind -> [layers, heads]: log-probability with that head off minus log_prob
    milliseconds: float  # what the measurement cost
    passes: int


def forced_log_prob(translator: Translator, result: handlers.DemoTranslation, tokens: list[str],
                    heads_off: Sequence) -> float:
    """The log-probability of ``tokens`` as the translation of the source (teacher-forced) with ``heads_off``."""
    (forced,) = translator.translate([result.source], beam_size=1, target_prefix=[tokens],
                                     max_length=len(tokens) + 1, heads_off=heads_off)
    return float(sum(forced.hypotheses[0].token_log_probs[:len(tokens)]))


def head_effects(directions: Mapping[str, Translator], result: handlers.DemoTranslation | None,
                 progress: Callable[[int, int], None] | None = None) -> HeadEffects:
    """For every head of every kind and layer, switched off alone: the change in log-probability of the original
    translation's tokens (teacher-forced: ``target_prefix`` = those tokens), one pass per head and one with every
    head on. ``progress(done, total)`` is called after each pass."""
    if result is None:
        raise DemoInputError("Translate a sentence first: the heads are measured on that translation.")
    translator = directions[result.direction]
    tokens = result.attention.target_tokens[:len(result.hypothesis.token_ids)]
    if not result.hypothesis.finished:  # it stopped at the longest output: the prefix must leave one step
        tokens = tokens[:-1]
    if not tokens:
        raise DemoInputError("The translation is empty: there is nothing to score.")
    heads = [(kind, layer, head) for kind in HEAD_KINDS for layer in range(getattr(result.attention, kind).shape[0])
             for head in range(getattr(result.attention, kind).shape[1])]
    start = time.perf_counter()
    log_prob = forced_log_prob(translator, result, tokens, [])
    changes = {kind: np.zeros(getattr(result.attention, kind).shape[:2]) for kind in HEAD_KINDS}
    for done, (kind, layer, head) in enumerate(heads, start=1):
        changes[kind][layer, head] = forced_log_prob(translator, result, tokens, [(kind, layer, head)]) - log_prob
        if progress is not None:
            progress(done, len(heads))
    return HeadEffects(tokens, log_prob, changes, (time.perf_counter() - start) * 1000, len(heads) + 1)


def head_effects_view(effects: HeadEffects) -> tuple[object, str]:
    """The three small heatmaps (kind: layer x head) and a summary in Markdown: the head that matters most, cost."""
    figure = figures.head_effects_figure(effects.changes, SHORT_KIND_NAMES,
                                         title="Change in log P of the translation,<br>each head switched off alone")
    kind, layer, head = min(((kind, layer, head) for kind, changes in effects.changes.items()
                             for layer, head in np.ndindex(changes.shape)),
                            key=lambda entry: effects.changes[entry[0]][entry[1], entry[2]])
    worst = effects.changes[kind][layer, head]
    summary = (f"log P of the translation's {len(effects.tokens)} tokens (without `</s>`) with every head on: "
               f"**{effects.log_prob:.3f}**. Switching off **{heads_name([(kind, layer, head)])}** alone costs the "
               f"most: {worst:+.3f}. Measured with {effects.passes} teacher-forced passes in "
               f"{effects.milliseconds:,.0f} ms.")
    return figure, summary
