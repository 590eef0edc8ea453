"""The beam search of one translation drawn as a tree: inline SVG, its CSS and the page script (no Gradio, no
JavaScript library).

Column t holds the candidates the search ranked at step t (2 x beam size of them, best at the top), each joined to
the beam it extends in column t - 1; the root is the decoder's start token (``<s>``; an imported Marian model's
``<pad>``). Every node is a focusable button whose label carries its token, its own and cumulative log-probability
and its fate (:data:`core.search.BEAM_STATUSES`), so hovering, focusing or tapping it shows them; clicking it or pressing Enter asks the server to show its attention. The tree
is bounded by the demo's limits: at most ``1.5 x 129 + 10`` steps of at most 16 candidates.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from core.search import BeamRecord

COLUMN, ROW = 100, 30  # pixels between steps, between ranks
NODE_WIDTH, NODE_HEIGHT = 88, 22
LEFT, TOP = 6, 24  # room for the step numbers above the nodes
LABEL_CHARACTERS = 10  # longer tokens are cut with "…" in the node (the label and the status line have them whole)
STATUS_WORDS = {"kept": "kept in the beam", "finished": "finished: a complete translation",
                "stopped": "stopped at the maximum length", "pruned": "pruned (ranked, not kept)"}


def chosen_nodes(record: BeamRecord) -> set[tuple[int, int]]:
    """(step, index) of every node on the path of the returned translation (empty when nothing was searched)."""
    if not record.hypotheses:
        return set()
    step, index = record.hypotheses[0]
    return {(s, record.steps[s].index(node)) for s, node in enumerate(record.path(step, index))}


def node_label(record: BeamRecord, step: int, index: int, token: str, chosen: bool) -> str:
    """What a node says to a screen reader, a hover and the status line."""
    node = record.steps[step][index]
    return (f"step {step + 1}, candidate {index + 1}: {token}; token log-prob {node.token_log_prob:.2f}, "
            f"total {node.log_prob:.2f}; {STATUS_WORDS[node.status]}"
            + ("; on the translation" if chosen else ""))


def short(token: str) -> str:
    return token if len(token) <= LABEL_CHARACTERS else token[: LABEL_CHARACTERS - 1] + "…"


def beam_tree_html(record: BeamRecord, token: Callable[[int], str], start: str = "<s>") -> str:
    """The record as an SVG tree in a box that scrolls, with a legend and a status line; ``token`` names a token id.

    The path of the returned translation is highlighted, pruned candidates are grey and dashed, finished ones
    (EOS) green, stopped ones (the maximum length) orange. Arrow keys move between nodes (← the parent, → the first
    child, ↑ ↓ the next rank), Enter or Space selects.
    """
    if not record.steps:
        return "<div class='beam-tree'><p>Nothing to draw: the translation is empty.</p></div>"
    chosen = chosen_nodes(record)
    entry = min(chosen, default=(0, 0))  # the one node Tab reaches; the arrow keys move from there
    height = TOP + ROW * max(len(nodes) for nodes in record.steps) + 4
    width = LEFT + COLUMN * (len(record.steps) + 1)
    centre = NODE_HEIGHT / 2

    def place(step: int, rank: int) -> tuple[int, int]:  # step -1 is the root
        return LEFT + COLUMN * (step + 1), TOP + ROW * rank

    edges, nodes, numbers = [], [], []
    kept_ranks: list[int] = [0]  # the rank of each kept node of the previous step (the root before step 0)
    for step, candidates in enumerate(record.steps):
        x, _ = place(step, 0)
        numbers.append(f"<text class='step' x='{x + NODE_WIDTH / 2}' y='{TOP - 8}'>{step + 1}</text>")
        kept, kept_ranks_here = 0, []
        for index, node in enumerate(candidates):
            name = token(node.token_id)
            on_path = (step, index) in chosen
            x, y = place(step, index)
            px, py = place(step - 1, kept_ranks[max(node.parent, 0)])
            mid = (px + NODE_WIDTH + x) / 2
            edges.append(f"<path class='e {node.status}{' chosen' if on_path else ''}' d='M{px + NODE_WIDTH} "
                         f"{py + centre}C{mid} {py + centre} {mid} {y + centre} {x} {y + centre}'/>")
            kept_attribute = ""
            if node.status == "kept":
                kept_attribute = f" data-k='{kept}'"
                kept_ranks_here.append(index)
                kept += 1
            label = html.escape(node_label(record, step, index, name, on_path), quote=True)
            tab_index = 0 if (step, index) == entry else -1
            nodes.append(f"<g class='n {node.status}{' chosen' if on_path else ''}' data-s='{step}' data-i='{index}' "
                         f"data-p='{node.parent}'{kept_attribute} tabindex='{tab_index}' role='button' "
                         f"aria-label='{label}'>"
                         f"<rect x='{x}' y='{y}' width='{NODE_WIDTH}' height='{NODE_HEIGHT}' rx='4'/>"
                         f"<text x='{x + 6}' y='{y + 15}'>{html.escape(short(name))}</text></g>")
        kept_ranks = kept_ranks_here or [0]
    root = (f"<g class='n root chosen'><rect x='{LEFT}' y='{TOP}' width='{NODE_WIDTH}' height='{NODE_HEIGHT}' "
            f"rx='4'/><text x='{LEFT + 6}' y='{TOP + 15}'>{html.escape(short(start))}</text></g>")
    svg = (f"<svg class='beam-svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='group' "
           f"aria-label='beam search: {len(record.steps)} steps'>"
           f"{''.join(numbers)}{''.join(edges)}{root}{''.join(nodes)}</svg>")
    return (
        "<div class='beam-tree'>"
        "<div class='beam-legend'><span class='key chosen'>the translation</span> <span class='key kept'>kept</span> "
        "<span class='key finished'>finished (EOS)</span> <span class='key stopped'>stopped (length)</span> "
        "<span class='key pruned'>pruned</span> <span class='key selected'>shown below</span></div>"
        f"<div class='beam-scroll'>{svg}</div>"
        "<div class='beam-status' aria-live='polite'>Hover, focus or tap a node for its token and scores; click it (or "
        "press Enter) to show its attention above. Arrow keys move between nodes.</div>"
        "</div>"
    )


# Runs in the page (gr.HTML js_on_load): the status line follows the pointer and the focus; a click, Enter or Space
# marks the node and sends its step and index to the server (trigger('select')); arrow keys move the focus along
# the tree. Listeners sit on the component's root element, so they survive a new tree replacing the old one.
BEAM_TREE_SCRIPT = """
const status = (node) => {
  const line = element.querySelector('.beam-status');
  if (line && node) line.textContent = node.getAttribute('aria-label');
};
const nodeOf = (event) => event.target.closest && event.target.closest('g.n[data-s]');
const choose = (node) => {
  element.querySelectorAll('g.n.selected').forEach((other) => other.classList.remove('selected'));
  node.classList.add('selected');
  status(node);
  trigger('select', {step: Number(node.dataset.s), index: Number(node.dataset.i)});
};
const move = (node, key) => {
  const step = Number(node.dataset.s), index = Number(node.dataset.i);
  const find = (selector) => element.querySelector(selector);
  if (key === 'ArrowUp') return find(`g.n[data-s='${step}'][data-i='${index - 1}']`);
  if (key === 'ArrowDown') return find(`g.n[data-s='${step}'][data-i='${index + 1}']`);
  if (key === 'ArrowLeft') return find(`g.n[data-s='${step - 1}'][data-k='${node.dataset.p}']`);
  if (key === 'ArrowRight') return node.dataset.k === undefined ? null
    : find(`g.n[data-s='${step + 1}'][data-p='${node.dataset.k}']`);
  return null;
};
element.addEventListener('mouseover', (event) => status(nodeOf(event)));
element.addEventListener('focusin', (event) => status(nodeOf(event)));
element.addEventListener('click', (event) => { const node = nodeOf(event); if (node) choose(node); });
element.addEventListener('keydown', (event) => {
  const node = nodeOf(event);
  if (!node) return;
  if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); choose(node); return; }
  const next = move(node, event.key);
  if (next) {
    event.preventDefault();
    node.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }
});
"""

BEAM_TREE_CSS = """
.beam-tree { --beam-rgb: 37, 99, 235; font-family: system-ui, sans-serif; max-width: 100%; }
.beam-legend { font-size: 0.85em; display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 6px; }
.beam-legend .key { padding: 0 6px; border-radius: 4px; border: 1.5px solid rgba(128, 128, 128, 0.6); }
.beam-legend .key.chosen { background: rgb(var(--beam-rgb)); color: white; border-color: rgb(var(--beam-rgb)); }
.beam-legend .key.kept { border-color: rgb(var(--beam-rgb)); }
.beam-legend .key.finished { border-color: rgb(22, 163, 74); border-width: 2.5px; }
.beam-legend .key.stopped { border-color: rgb(234, 88, 12); border-width: 2.5px; }
.beam-legend .key.pruned { border-style: dashed; opacity: 0.6; }
.beam-legend .key.selected { border-color: rgb(234, 179, 8); border-width: 2.5px; }
.beam-scroll { overflow: auto; max-width: 100%; max-height: 60vh; border: 1px solid rgba(128, 128, 128, 0.25);
  border-radius: 6px; }
.beam-svg { display: block; font-size: 12px; }
.beam-svg text { fill: currentColor; }
.beam-svg text.step { text-anchor: middle; opacity: 0.6; font-size: 11px; }
.beam-svg path.e { fill: none; stroke: rgba(128, 128, 128, 0.45); stroke-width: 1; }
.beam-svg path.e.pruned { stroke-dasharray: 3 3; opacity: 0.6; }
.beam-svg path.e.chosen { stroke: rgb(var(--beam-rgb)); stroke-width: 3; }
.beam-svg g.n { cursor: pointer; }
.beam-svg g.n rect { fill: rgba(128, 128, 128, 0.08); stroke: rgb(var(--beam-rgb)); stroke-width: 1.2; }
.beam-svg g.n.pruned { opacity: 0.5; }
.beam-svg g.n.pruned rect { stroke: rgb(128, 128, 128); stroke-dasharray: 3 2; }
.beam-svg g.n.finished rect { stroke: rgb(22, 163, 74); stroke-width: 2.5; }
.beam-svg g.n.stopped rect { stroke: rgb(234, 88, 12); stroke-width: 2.5; }
.beam-svg g.n.chosen rect { fill: rgb(var(--beam-rgb)); }
.beam-svg g.n.chosen text { fill: white; font-weight: 600; }
.beam-svg g.n:hover rect, .beam-svg g.n:focus rect { stroke-width: 3; }
.beam-svg g.n:focus { outline: none; }
.beam-svg g.n.selected rect { stroke: rgb(234, 179, 8); stroke-width: 3.5; }
.beam-status { font-size: 0.9em; margin-top: 4px; min-height: 2.6em; }
"""
