"""Plotly figures and the alignment view's HTML, built from plain arrays and token lists (no Gradio)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORSCALE = "Blues"
FONT = dict(family="system-ui, sans-serif", size=12)
ALIGNMENT_RGB = "37, 99, 235"  # the shade of attended source tokens, scaled by their weight


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels "1·▁the", "2·▁dog": plotly would merge repeated category labels into one row.

    Plotly reads labels as HTML, so "</s>" is escaped to stay visible.
    """
    return [f"{position}·{html.escape(token)}" for position, token in enumerate(tokens, start=1)]


def hover_template(query_title: str, key_title: str) -> str:
    return f"{query_title}: %{{y}}<br>{key_title}: %{{x}}<br>weight: %{{z:.3f}}<extra></extra>"


def attention_heatmap(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str], *, title: str,
                      query_title: str = "query", key_title: str = "key") -> go.Figure:
    """One attention matrix [queries, keys] as a heatmap, queries top to bottom, the weight on hover."""
    figure = go.Figure(go.Heatmap(
        z=weights, x=token_labels(key_tokens), y=token_labels(query_tokens), zmin=0.0, zmax=1.0,
        colorscale=COLORSCALE, colorbar=dict(title="weight"), hovertemplate=hover_template(query_title, key_title),
    ))
    side = 22 * max(len(query_tokens), 6)
    figure.update_layout(title=dict(text=title), font=FONT, height=min(max(side + 200, 380), 1400),
                         margin=dict(l=10, r=10, t=50, b=10))
    figure.update_xaxes(title=key_title, type="category", tickangle=-60)
    figure.update_yaxes(title=query_title, type="category", autorange="reversed")
    return figure


def heads_grid(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str], *,
               title: str) -> go.Figure:
    """Every head of one layer [heads, queries, keys] as small multiples, then their mean, on one colour scale."""
    heads = weights.shape[0]
    panels = [(f"head {h + 1}", weights[h]) for h in range(heads)] + [("mean", weights.mean(axis=0))]
    columns = min(len(panels), 5)
    rows = math.ceil(len(panels) / columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[name for name, _ in panels],
                           horizontal_spacing=0.02, vertical_spacing=0.08)
    queries, keys = token_labels(query_tokens), token_labels(key_tokens)
    for index, (name, panel) in enumerate(panels):
        figure.add_trace(go.Heatmap(z=panel, x=keys, y=queries, zmin=0.0, zmax=1.0, colorscale=COLORSCALE,
                                    showscale=index == 0, name=name,
                                    hovertemplate=f"{name}<br>" + hover_template("query", "key")),
                         row=index // columns + 1, col=index % columns + 1)
    figure.update_xaxes(type="category", showticklabels=False)
    figure.update_yaxes(type="category", autorange="reversed", showticklabels=False)
    figure.update_layout(title=dict(text=title), font=FONT, height=80 + 260 * rows,
                         margin=dict(l=10, r=10, t=70, b=10))
    return figure


def shade(weight: float) -> str:
    return f"background-color: rgba({ALIGNMENT_RGB}, {weight:.3f})"


def alignment_html(target_tokens: Sequence[str], source_tokens: Sequence[str], cross: np.ndarray, *,
                   caption: str, picked: int = 0) -> str:
    """Output tokens above source tokens; the source tokens are shaded by how much the picked output step attended
    to them (cross [T, S]). Each output token carries its row of weights in ``data-weights``, so the page's script
    can re-shade on hover and pin a step on click without asking the server."""
    if not target_tokens:
        return "<div class='alignment'><p>Nothing to align: the translation is empty.</p></div>"
    picked = min(max(picked, 0), len(target_tokens) - 1)
    outputs = []
    for step, token in enumerate(target_tokens):
        weights = ",".join(f"{w:.4f}" for w in cross[step])
        picked_class = " picked" if step == picked else ""
        outputs.append(f"<span class='tok tgt{picked_class}' data-step='{step}' data-weights='{weights}' "
                       f"title='step {step + 1}: {html.escape(token, quote=True)}'>{html.escape(token)}</span>")
    sources = []
    for position, token in enumerate(source_tokens):
        weight = float(cross[picked, position])
        sources.append(f"<span class='tok src' data-position='{position}' style='{shade(weight)}' "
                       f"title='weight {weight:.3f}'>{html.escape(token)}</span>")
    return (
        f"<div class='alignment' data-picked='{picked}'>"
        f"<div class='alignment-caption'>Hover over an output token, or click to pin it (← → step through the "
        f"output). Source tokens are shaded by its {html.escape(caption)}.</div>"
        f"<div class='alignment-row'><span class='alignment-label'>output</span>{''.join(outputs)}</div>"
        f"<div class='alignment-row'><span class='alignment-label'>source</span>{''.join(sources)}</div>"
        f"<div class='alignment-status'>step {picked + 1} of {len(target_tokens)}: "
        f"{html.escape(target_tokens[picked])}</div>"
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
    source.style.backgroundColor = `rgba(%RGB%, ${weights[i].toFixed(3)})`;
    source.title = `weight ${weights[i].toFixed(3)}`;
  });
  outputs.forEach((output, i) => output.classList.toggle('shown', i === step));
  const status = alignment.querySelector('.alignment-status');
  if (status) status.textContent = `step ${step + 1} of ${outputs.length}: ${target.textContent}`;
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
""".replace("%RGB%", ALIGNMENT_RGB)

ALIGNMENT_CSS = """
.alignment { font-family: system-ui, sans-serif; line-height: 2.4; }
.alignment-caption { font-size: 0.9em; opacity: 0.8; }
.alignment-label { display: inline-block; width: 4.5em; font-weight: 600; }
.tok { padding: 2px 5px; margin: 1px; border-radius: 4px; border: 1px solid rgba(128, 128, 128, 0.35);
       white-space: pre; }
.tgt { cursor: pointer; }
.tgt.shown { outline: 2px solid rgb(%RGB%); }
.tgt.picked { background-color: rgba(%RGB%, 0.18); font-weight: 600; }
""".replace("%RGB%", ALIGNMENT_RGB)


def matrix_table(matrix: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], *, title: str,
                 digits: int = 3) -> str:
    """A small labelled matrix as an HTML table."""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in column_labels)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{value:.{digits}f}</td>" for value in row) + "</tr>"
        for label, row in zip(row_labels, np.asarray(matrix)))
    return (f"<table class='matrix'><caption>{html.escape(title)}</caption>"
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>")


def positional_encoding_figure(table: np.ndarray) -> go.Figure:
    """The sinusoidal positional-encoding matrix [positions, d_model] as a heatmap, and a few of its columns."""
    length, d_model = table.shape
    figure = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                           subplot_titles=["PE[pos, dimension]", "a few dimensions along the positions"])
    figure.add_trace(go.Heatmap(z=table, zmin=-1.0, zmax=1.0, colorscale="RdBu", colorbar=dict(x=0.55),
                                hovertemplate="pos %{y}<br>dimension %{x}<br>PE %{z:.4f}<extra></extra>"),
                     row=1, col=1)
    for dimension in sorted({0, 1, min(4, d_model - 2), d_model // 2, d_model - 2}):
        figure.add_trace(go.Scatter(x=np.arange(length), y=table[:, dimension], mode="lines",
                                    name=f"dimension {dimension} ({'sin' if dimension % 2 == 0 else 'cos'})"),
                         row=1, col=2)
    figure.update_yaxes(title="position", autorange="reversed", row=1, col=1)
    figure.update_xaxes(title="dimension", row=1, col=1)
    figure.update_xaxes(title="position", row=1, col=2)
    figure.update_layout(font=FONT, height=460, margin=dict(l=10, r=10, t=50, b=10),
                         title=dict(text=f"Sinusoidal positional encoding, {length} positions × d_model {d_model}"),
                         legend=dict(orientation="h", y=-0.15))
    return figure
