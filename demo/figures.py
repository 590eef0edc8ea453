"""Plotly figures and the alignment view's HTML, built from plain arrays and token lists (no Gradio)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORSCALE = "Blues"
# Grey text on a transparent background reads on Gradio's light and dark themes alike.
FONT = dict(family="system-ui, sans-serif", size=12, color="#8a8f98")
TRANSPARENT = dict(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
GRID = "rgba(138, 143, 152, 0.25)"
WIDE_AFTER = 20  # key tokens a narrow screen can label side by side; more get a figure wide enough to scroll
TALL_AFTER = 40  # query tokens drawn 22 px apart; more are drawn 16 px apart and the figure grows (the page scrolls)
COLORBAR_PIXELS = 150  # a heatmap's colour bar, above the left end of its cells: in view before any scrolling
WORD_START = "▁"  # the tokenizer's mark for a token that starts a word (a space before it)


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels "1·▁the", "2·▁dog": plotly would merge repeated category labels into one row.

    Plotly reads labels as HTML, so "</s>" is escaped to stay visible.
    """
    return [f"{position}·{html.escape(token)}" for position, token in enumerate(tokens, start=1)]


def hover_template(query_title: str, key_title: str, value_name: str = "weight") -> str:
    return f"{query_title}: %{{y}}<br>{key_title}: %{{x}}<br>{value_name}: %{{z:.3f}}<extra></extra>"


def scale_top(weights: np.ndarray) -> float:
    """The colour scale's top: the view's largest weight, so long inputs' small weights stay visible."""
    return max(float(np.max(weights)) if weights.size else 0.0, 1e-3)


def style(figure: go.Figure, *, title: str, height: int, top: int = 60) -> go.Figure:
    """The demo's look: system fonts, grey text, transparent background, a title that may wrap (<br>)."""
    figure.update_layout(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=13)), font=FONT,
                         height=height, margin=dict(l=10, r=10, t=top, b=10), **TRANSPARENT)
    figure.update_xaxes(gridcolor=GRID, zerolinecolor=GRID)
    figure.update_yaxes(gridcolor=GRID, zerolinecolor=GRID)
    return figure


def attention_heatmap(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str], *, title: str,
                      query_title: str = "query", key_title: str = "key", top: float | None = None) -> go.Figure:
    """One attention matrix [queries, keys] as a heatmap, queries top to bottom, the weight on hover; the colour
    scale runs from 0 to this view's largest weight (its top is on the colour bar), or to ``top`` when given (a
    scale shared with another view)."""
    return heatmap(weights, token_labels(query_tokens), token_labels(key_tokens), title=title, zmin=0.0,
                   zmax=scale_top(weights) if top is None else top, colorscale=COLORSCALE, value_name="weight",
                   query_title=query_title, key_title=key_title)


def difference_heatmap(difference: np.ndarray, query_labels: Sequence[str], key_tokens: Sequence[str], *,
                       title: str, query_title: str, key_title: str) -> go.Figure:
    """A difference of two attention matrices [queries, keys] on a diverging scale centred on 0 (red: more
    attention in the first, blue: less), symmetric around 0 up to the largest change; query_labels as given."""
    top = scale_top(np.abs(difference))
    figure = heatmap(difference, list(query_labels), token_labels(key_tokens), title=title, zmin=-top, zmax=top,
                     colorscale="RdBu_r", value_name="change", query_title=query_title, key_title=key_title)
    figure.update_traces(colorbar=dict(tickvals=[-top, 0, top], ticktext=[f"{-top:.2f}", "0", f"{top:.2f}"]))
    return figure


def heatmap(z: np.ndarray, query_labels: list[str], key_labels: list[str], *, title: str, zmin: float, zmax: float,
            colorscale: str, value_name: str, query_title: str, key_title: str) -> go.Figure:
    """The demo's heatmap of a [queries, keys] matrix: the colour bar above its left end (so that the matrix keeps
    the width of a phone, and the scale is in view before the figure is scrolled), every label shown, a fixed width
    that scrolls in its box beyond :data:`WIDE_AFTER` keys, and rows that stay readable however many there are."""
    figure = go.Figure(go.Heatmap(
        z=z, x=key_labels, y=query_labels, zmin=zmin, zmax=zmax, colorscale=colorscale,
        colorbar=dict(title=dict(text=value_name, side="top"), orientation="h", thickness=10, lenmode="pixels",
                      len=COLORBAR_PIXELS, x=0, xanchor="left", y=1.0, yanchor="bottom"),
        hovertemplate=hover_template(query_title, key_title, value_name),
    ))
    row = 22 if len(query_labels) <= TALL_AFTER else 16  # 16 px: the least that keeps every row's label apart
    style(figure, title=title, height=max(row * len(query_labels) + 230, 410), top=110)
    if len(key_labels) > WIDE_AFTER:  # too many labels for a phone: a fixed width, scrolled inside its box
        figure.update_layout(width=16 * len(key_labels) + 230, autosize=False)
    figure.update_xaxes(title=key_title, type="category", tickangle=-90, dtick=1, tickfont=dict(size=11))  # all
    figure.update_yaxes(title=query_title, type="category", autorange="reversed", dtick=1, tickfont=dict(size=11))
    return figure


def small_multiples(panels: Sequence[tuple[str, np.ndarray]], query_tokens: Sequence[str],
                    key_tokens: Sequence[str], *, title: str) -> go.Figure:
    """Named matrices [queries, keys] (every head of a layer and their mean, say) as small multiples on one colour
    scale (0 to the largest weight of any panel), three to a row so that their titles fit on a phone too."""
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[name for name, _ in panels],
                           horizontal_spacing=0.04, vertical_spacing=0.1)
    queries, keys = token_labels(query_tokens), token_labels(key_tokens)
    top = max(scale_top(panel) for _, panel in panels)
    for index, (name, panel) in enumerate(panels):
        figure.add_trace(go.Heatmap(z=panel, x=keys, y=queries, zmin=0.0, zmax=top, colorscale=COLORSCALE,
                                    showscale=index == 0, colorbar=dict(thickness=10), name=name,
                                    hovertemplate=f"{name}<br>" + hover_template("query", "key")),
                         row=index // columns + 1, col=index % columns + 1)
    figure.update_annotations(font=dict(size=12))
    style(figure, title=title, height=90 + 240 * rows, top=80)
    figure.update_xaxes(type="category", showticklabels=False)
    figure.update_yaxes(type="category", autorange="reversed", showticklabels=False)
    return figure


def shade(weight: float) -> str:
    return f"background-color: rgba(var(--alignment-rgb), {weight:.3f})"


def alignment_html(query_tokens: Sequence[str], key_tokens: Sequence[str], weights: np.ndarray, *, caption: str,
                   query_label: str = "output", key_label: str = "source", picked: int = 0) -> str:
    """Query tokens above key tokens; the key tokens are shaded by how much the picked query attended to them
    (weights [Q, K]). Each query token carries its row of weights in ``data-weights``, so the page's script can
    re-shade on hover and pin a step on click without asking the server. Both rows wrap, so every token stays on
    the page, and ``▁`` (a token that starts a word) is explained in the caption."""
    if not query_tokens:
        return "<div class='alignment'><p>Nothing to align: the translation is empty.</p></div>"
    picked = min(max(picked, 0), len(query_tokens) - 1)
    queries = []
    for step, token in enumerate(query_tokens):
        row = ",".join(f"{w:.4f}" for w in weights[step])
        picked_class = " picked" if step == picked else ""
        queries.append(f"<span class='tok tgt{picked_class}' tabindex='-1' data-step='{step}' data-weights='{row}' "
                       f"title='{html.escape(query_label, quote=True)} {step + 1}: {html.escape(token, quote=True)}'>"
                       f"{html.escape(token)}</span>")
    keys = []
    for position, token in enumerate(key_tokens):
        weight = float(weights[picked, position])
        keys.append(f"<span class='tok src' data-position='{position}' style='{shade(weight)}' "
                    f"title='weight {weight:.3f}'>{html.escape(token)}</span>")
    return (
        f"<div class='alignment' data-picked='{picked}'>"
        f"<div class='alignment-caption'>Hover over or tap a token of the top row, or click to pin it (focus the view "
        f"and use ← →). The bottom row is shaded by its {html.escape(caption)}. {WORD_START} marks a token that "
        f"starts a word.</div>"
        f"<div class='alignment-label'>{html.escape(query_label)}</div><div class='alignment-row'>{''.join(queries)}</div>"
        f"<div class='alignment-label'>{html.escape(key_label)}</div><div class='alignment-row'>{''.join(keys)}</div>"
        f"<div class='alignment-status'>{html.escape(query_label)} {picked + 1} of {len(query_tokens)}: "
        f"{html.escape(query_tokens[picked])}</div>"
        "</div>"
    )


# Runs in the page (gr.HTML js_on_load): re-shades the source tokens from the data-weights of the output token under
# the pointer or pinned by a click; the arrow keys move the pinned step. Listeners sit on the component's root
# element, so they keep working when a new translation replaces the HTML inside it.
ALIGNMENT_SCRIPT = """
const show = (alignment, step) => {
  const outputs = alignment.querySelectorAll('.tgt');
  const target = outputs[step];
  if (!target) return;
  const weights = target.dataset.weights.split(',').map(Number);
  alignment.querySelectorAll('.src').forEach((source, i) => {
    source.style.backgroundColor = `rgba(var(--alignment-rgb), ${weights[i].toFixed(3)})`;
    source.title = `weight ${weights[i].toFixed(3)}`;
  });
  outputs.forEach((output, i) => output.classList.toggle('shown', i === step));
  const status = alignment.querySelector('.alignment-status');
  const label = alignment.querySelector('.alignment-label').textContent;
  if (status) status.textContent = `${label} ${step + 1} of ${outputs.length}: ${target.textContent}`;
};
const pin = (alignment, step) => {
  const outputs = alignment.querySelectorAll('.tgt');
  step = Math.max(0, Math.min(step, outputs.length - 1));
  alignment.dataset.picked = String(step);
  outputs.forEach((output, i) => output.classList.toggle('picked', i === step));
  show(alignment, step);
};
element.addEventListener('mouseover', (event) => {
  const target = event.target.closest('.tgt');
  if (target) show(target.closest('.alignment'), Number(target.dataset.step));
});
element.addEventListener('mouseout', (event) => {
  const target = event.target.closest('.tgt');
  if (target && !target.contains(event.relatedTarget)) {
    const alignment = target.closest('.alignment');
    show(alignment, Number(alignment.dataset.picked));
  }
});
element.addEventListener('click', (event) => {
  const target = event.target.closest('.tgt');
  if (target) pin(target.closest('.alignment'), Number(target.dataset.step));
});
element.tabIndex = 0;
element.addEventListener('keydown', (event) => {
  const alignment = element.querySelector('.alignment');
  if (!alignment || !['ArrowLeft', 'ArrowRight'].includes(event.key)) return;
  event.preventDefault();
  pin(alignment, Number(alignment.dataset.picked) + (event.key === 'ArrowRight' ? 1 : -1));
});
"""

ALIGNMENT_CSS = """
.alignment { --alignment-rgb: 37, 99, 235; }
.alignment { font-family: system-ui, sans-serif; line-height: 2.2; max-width: 100%; }
.alignment-caption { font-size: 0.9em; opacity: 0.8; line-height: 1.4; margin-bottom: 4px; }
.alignment-label { font-weight: 600; font-size: 0.85em; opacity: 0.8; }
.alignment-row { display: flex; flex-wrap: wrap; gap: 2px; max-height: 16em; overflow-y: auto; }
.tok { padding: 0 5px; border-radius: 4px; border: 1px solid rgba(128, 128, 128, 0.35); white-space: pre; }
.tgt { cursor: pointer; }
.tgt.shown { outline: 2px solid rgb(var(--alignment-rgb)); }
.tgt.picked { background-color: rgba(var(--alignment-rgb), 0.22); font-weight: 600; }
.alignment-status { font-size: 0.9em; }
"""


def matrix_table(matrix: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], *, title: str,
                 digits: int = 3, marked_row: int | None = None, marked_column: int | None = None) -> str:
    """A small labelled matrix as an HTML table; a marked row or column (0-based) gets the class ``marked``."""
    def cell(r: int, c: int, value: float) -> str:
        marked = " class='marked'" if r == marked_row or c == marked_column else ""
        return f"<td{marked}>{value:.{digits}f}</td>"

    head = "".join(f"<th>{html.escape(label)}</th>" for label in column_labels)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>" + "".join(cell(r, c, value) for c, value in enumerate(row)) + "</tr>"
        for r, (label, row) in enumerate(zip(row_labels, np.asarray(matrix))))
    return (f"<table class='matrix'><caption>{html.escape(title)}</caption>"
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>")


def positional_encoding_figure(table: np.ndarray) -> go.Figure:
    """The sinusoidal positional-encoding matrix [positions, d_model] as a heatmap, and a few of its columns below
    it (stacked, so that the colour bar, the titles and the legend each keep their own space on a phone)."""
    length, d_model = table.shape
    figure = make_subplots(rows=2, cols=1, row_heights=[0.58, 0.42], vertical_spacing=0.16,
                           subplot_titles=["PE[pos, dimension]", "a few dimensions along the positions"])
    figure.add_trace(go.Heatmap(z=table, zmin=-1.0, zmax=1.0, colorscale="RdBu",
                                colorbar=dict(thickness=12, len=0.5, y=0.77, title=dict(text="PE", side="right")),
                                hovertemplate="pos %{y}<br>dimension %{x}<br>PE %{z:.4f}<extra></extra>"),
                     row=1, col=1)
    for dimension in sorted({0, 1, min(4, d_model - 2), d_model // 2, d_model - 2}):
        figure.add_trace(go.Scatter(x=np.arange(length), y=table[:, dimension], mode="lines",
                                    name=f"dim {dimension} ({'sin' if dimension % 2 == 0 else 'cos'})"),
                         row=2, col=1)
    figure.update_yaxes(title="position", autorange="reversed", row=1, col=1)
    figure.update_xaxes(title="dimension", row=1, col=1)
    figure.update_xaxes(title="position", row=2, col=1)
    figure.update_yaxes(title="PE", row=2, col=1)
    style(figure, title=f"Sinusoidal positional encoding:<br>{length} positions × d_model {d_model}", height=720,
          top=80)
    figure.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.1, x=0))
    figure.update_layout(margin=dict(b=90))
    return figure


def head_effects_figure(effects: dict[str, np.ndarray], titles: dict[str, str], *, title: str) -> go.Figure:
    """One small heatmap [layers, heads] per attention kind, side by side on one diverging colour scale centred
    on 0: what switching each head off alone does to a number (blue: it rises, red: it falls), on hover."""
    kinds = list(effects)
    figure = make_subplots(rows=1, cols=len(kinds), subplot_titles=[titles[kind] for kind in kinds],
                           horizontal_spacing=0.06)
    top = max(max((float(np.abs(values).max()) for values in effects.values() if values.size), default=0.0), 1e-3)
    for index, kind in enumerate(kinds):
        layers, heads = effects[kind].shape
        figure.add_trace(go.Heatmap(z=effects[kind], x=[f"H{h}" for h in range(1, heads + 1)],
                                    y=[f"L{layer}" for layer in range(1, layers + 1)], zmin=-top, zmax=top,
                                    colorscale="RdBu", showscale=index == 0, name=titles[kind],
                                    colorbar=dict(orientation="h", thickness=10, len=0.8, x=0.5, y=-0.12,
                                                  yanchor="top", title=dict(text="change", side="top")),
                                    hovertemplate=f"{titles[kind]}<br>%{{y}} %{{x}}: %{{z:+.3f}}<extra></extra>"),
                         row=1, col=index + 1)
    figure.update_annotations(font=dict(size=12))
    style(figure, title=title, height=330, top=80)
    figure.update_layout(margin=dict(b=80))
    figure.update_xaxes(type="category", tickfont=dict(size=10))
    figure.update_yaxes(type="category", autorange="reversed", tickfont=dict(size=10))
    return figure
