// The inspector's drawings, in plain SVG built with DOM calls (no charting library: see docs/static.md). Every
// function takes data and returns an element; none reads the page's state. Text goes in as text nodes, never markup.

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
export function svg(name, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  element.append(...children);
  return element;
}

/** A weight in [0, 1] as a colour from white to dark blue. */
export function colour(weight) {
  const w = Math.max(0, Math.min(1, weight));
  const channel = (from, to) => Math.round(from + (to - from) * w);
  return `rgb(${channel(255, 8)},${channel(255, 48)},${channel(255, 107)})`;
}

/** A token for a label: the word-start mark shown as "▁" kept, long tokens cut with "…". */
export function short(token, most = 12) {
  return token.length <= most ? token : `${token.slice(0, most - 1)}…`;
}

/**
 * One head's weights as a heatmap: rows are queries, columns keys, a <rect class="cell"> per weight with its value
 * in data-w. Focus it and the arrow keys move a cursor cell; `onCell(row, column)` hears the pointer and the cursor.
 */
export function heatmap(matrix, rowTokens, columnTokens, { cell = 18, onCell = null, label = "" } = {}) {
  const left = 8 + 7 * Math.max(4, ...rowTokens.map((t) => short(t).length));
  const top = 8 + 7 * Math.max(4, ...columnTokens.map((t) => short(t).length));
  const width = left + cell * columnTokens.length + 4, height = top + cell * rowTokens.length + 4;
  const root = svg("svg", { class: "heatmap", width, height, viewBox: `0 0 ${width} ${height}`, tabindex: 0,
    role: "img", "aria-label": label });
  columnTokens.forEach((token, j) => {
    const x = left + cell * j + cell / 2 + 4, y = top - 6;
    root.append(svg("text", { class: "key", x, y, transform: `rotate(-60 ${x} ${y})` }, short(token)));
  });
  rowTokens.forEach((token, i) => root.append(svg("text", { class: "query", x: left - 6, y: top + cell * i + cell * 0.7,
    "text-anchor": "end" }, short(token))));
  const cells = svg("g", { class: "cells" });
  matrix.forEach((row, i) => row.forEach((weight, j) => cells.append(svg("rect", { class: "cell", x: left + cell * j,
    y: top + cell * i, width: cell, height: cell, fill: colour(weight), "data-r": i, "data-c": j, "data-w": weight }))));
  const cursor = svg("rect", { class: "cursor", width: cell, height: cell, x: left, y: top, visibility: "hidden" });
  root.append(cells, cursor);
  let at = [0, 0];
  const show = (i, j) => {
    at = [i, j];
    cursor.setAttribute("x", left + cell * j);
    cursor.setAttribute("y", top + cell * i);
    cursor.setAttribute("visibility", "visible");
    onCell?.(i, j);
  };
  root.addEventListener("pointermove", (event) => {
    const target = event.target;
    if (target.classList?.contains("cell")) show(Number(target.dataset.r), Number(target.dataset.c));
  });
  root.addEventListener("focus", () => show(...at));
  root.addEventListener("keydown", (event) => {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (!moves[event.key]) return;
    event.preventDefault();
    const [di, dj] = moves[event.key];
    show(Math.max(0, Math.min(rowTokens.length - 1, at[0] + di)), Math.max(0, Math.min(columnTokens.length - 1, at[1] + dj)));
  });
  return root;
}

/** A small picture of one head's weights (one pixel a weight, scaled up): an SVG <image> from a canvas. */
export function thumbnail(matrix, size = 56) {
  const rows = matrix.length, columns = matrix[0]?.length ?? 0;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(columns, 1);
  canvas.height = Math.max(rows, 1);
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  matrix.forEach((row, i) => row.forEach((weight, j) => {
    const [r, g, b] = colour(weight).match(/\d+/g).map(Number);
    image.data.set([r, g, b, 255], (i * canvas.width + j) * 4);
  }));
  context.putImageData(image, 0, 0);
  return svg("image", { href: canvas.toDataURL("image/png"), width: size, height: size, preserveAspectRatio: "none",
    style: "image-rendering: pixelated" });
}

/**
 * The alignment view: source tokens on top, target tokens below, a line from each target token to each source token
 * whose weight is at least `floor`, as dark and wide as the weight. `matrix` is [targets][sources].
 */
export function alignment(matrix, sourceTokens, targetTokens, { floor = 0.05 } = {}) {
  const gap = 64, width = 16 + gap * Math.max(sourceTokens.length, targetTokens.length), height = 150;
  const root = svg("svg", { class: "alignment", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "alignment: lines from each target token to the source tokens it attends to" });
  const x = (i) => 8 + gap * i + gap / 2;
  matrix.forEach((row, t) => row.forEach((weight, s) => {
    if (weight < floor) return;
    root.append(svg("line", { class: "link", x1: x(s), y1: 30, x2: x(t), y2: height - 30, "stroke-width": 0.5 + 4 * weight,
      "stroke-opacity": weight, "data-t": t, "data-s": s, "data-w": weight }));
  }));
  sourceTokens.forEach((token, i) => root.append(svg("text", { x: x(i), y: 20, "text-anchor": "middle" }, short(token, 9))));
  targetTokens.forEach((token, i) => root.append(svg("text", { x: x(i), y: height - 12, "text-anchor": "middle" }, short(token, 9))));
  return root;
}

// The beam tree, as demo/beamtree.py draws it: column t holds the candidates ranked at step t, best at the top,
// each joined to the beam it extends; the root is <s>.
const COLUMN = 100, ROW = 30, NODE_WIDTH = 88, NODE_HEIGHT = 22, LEFT = 6, TOP = 24;
export const STATUS_WORDS = { kept: "kept in the beam", finished: "finished: a complete translation",
  stopped: "stopped at the maximum length", pruned: "pruned (ranked, not kept)" };

/**
 * The beam record (translate(..., { recordBeams: true }).beams) as an SVG tree of focusable nodes: ← the parent,
 * → the first child, ↑ ↓ the next rank, Enter or Space (or a click) calls onSelect(step, index). `chosen` is the
 * set of "step:index" keys of the returned translation's path.
 */
export function beamTree(record, tokenOf, chosen, onSelect) {
  const height = TOP + ROW * Math.max(1, ...record.steps.map((nodes) => nodes.length)) + 4;
  const width = LEFT + COLUMN * (record.steps.length + 1);
  const root = svg("svg", { class: "beam-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `beam search: ${record.steps.length} steps` });
  const edges = svg("g"), nodes = svg("g");
  const place = (step, rank) => [LEFT + COLUMN * (step + 1), TOP + ROW * rank];
  let keptRanks = [0];
  const entry = [...chosen].sort()[0] ?? "0:0";
  record.steps.forEach((candidates, step) => {
    const [cx] = place(step, 0);
    root.append(svg("text", { class: "step", x: cx + NODE_WIDTH / 2, y: TOP - 8, "text-anchor": "middle" }, String(step + 1)));
    const keptHere = [];
    candidates.forEach((node, index) => {
      const token = tokenOf(node.tokenId), key = `${step}:${index}`, onPath = chosen.has(key);
      const [x, y] = place(step, index), [px, py] = place(step - 1, keptRanks[Math.max(node.parent, 0)] ?? 0);
      const mid = (px + NODE_WIDTH + x) / 2, c = NODE_HEIGHT / 2;
      edges.append(svg("path", { class: `e ${node.status}${onPath ? " chosen" : ""}`,
        d: `M${px + NODE_WIDTH} ${py + c}C${mid} ${py + c} ${mid} ${y + c} ${x} ${y + c}` }));
      const label = `step ${step + 1}, candidate ${index + 1}: ${token}; token log-prob ${node.tokenLogProb.toFixed(2)}, `
        + `total ${node.logProb.toFixed(2)}; ${STATUS_WORDS[node.status]}${onPath ? "; on the translation" : ""}`;
      const group = svg("g", { class: `n ${node.status}${onPath ? " chosen" : ""}`, "data-s": step, "data-i": index,
        "data-p": node.parent, tabindex: key === entry ? 0 : -1, role: "button", "aria-label": label },
      svg("rect", { x, y, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 4 }),
      svg("text", { x: x + 6, y: y + 15 }, short(token, 10)));
      if (node.status === "kept") {
        group.dataset.k = keptHere.length;
        keptHere.push(index);
      }
      nodes.append(group);
    });
    keptRanks = keptHere.length ? keptHere : [0];
  });
  const rootNode = svg("g", { class: "n root chosen" }, svg("rect", { x: LEFT, y: TOP, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 4 }),
    svg("text", { x: LEFT + 6, y: TOP + 15 }, "<s>"));
  root.append(edges, rootNode, nodes);
  const find = (selector) => root.querySelector(selector);
  const move = (node, key) => {
    const step = Number(node.dataset.s), index = Number(node.dataset.i);
    if (key === "ArrowUp") return find(`g.n[data-s="${step}"][data-i="${index - 1}"]`);
    if (key === "ArrowDown") return find(`g.n[data-s="${step}"][data-i="${index + 1}"]`);
    if (key === "ArrowLeft") return find(`g.n[data-s="${step - 1}"][data-k="${node.dataset.p}"]`);
    if (key === "ArrowRight") return node.dataset.k === undefined ? null : find(`g.n[data-s="${step + 1}"][data-p="${node.dataset.k}"]`);
    return null;
  };
  const select = (node) => {
    root.querySelectorAll("g.n.selected").forEach((other) => other.classList.remove("selected"));
    node.classList.add("selected");
    onSelect(Number(node.dataset.s), Number(node.dataset.i), node.getAttribute("aria-label"));
  };
  const nodeOf = (event) => event.target.closest?.("g.n[data-s]");
  root.addEventListener("click", (event) => { const node = nodeOf(event); if (node) select(node); });
  root.addEventListener("keydown", (event) => {
    const node = nodeOf(event);
    if (!node) return;
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(node); return; }
    const next = move(node, event.key);
    if (!next) return;
    event.preventDefault();
    node.setAttribute("tabindex", -1);
    next.setAttribute("tabindex", 0);
    next.focus();
    next.scrollIntoView?.({ block: "nearest", inline: "nearest" });
  });
  return root;
}
