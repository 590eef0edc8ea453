// The static inspector: loads the bundles named in inspector.json with serve/js's Translator (onnxruntime-web, in
// this tab), translates with the project's input policy and shows every attention head, the alignment, the beam
// search and heads switched off. Written by python -m demo.static; see docs/static.md.

import { responseBytes, sha256Hex, Translator } from "./js/translator.mjs";
import { ConfidenceModel, fitText, pathTo } from "./js/inspect.mjs";
import { loadSentenceSplitter, splitSentences } from "./js/sentences.mjs";
import { alignment, beamTree, heatmap, svg, thumbnail } from "./views.mjs";

const $ = (id) => document.getElementById(id);
const KINDS = { cross: "Encoder–decoder (cross) attention", encoder: "Encoder self-attention",
  decoder: "Decoder self-attention" };
const MEAN = "mean";
// A sentence to start from, per source language (the models know image descriptions).
const EXAMPLES = { en: "Two young children are playing with a red ball on the grass.",
  de: "Zwei junge Kinder spielen auf dem Rasen mit einem roten Ball." };
const megabytes = (bytes) => (bytes < 1e5 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(1)} MB`);

const page = { settings: null, ort: null, directions: new Map(), shown: null, view: { kind: "cross", layer: 0, head: MEAN } };

/** The one message a failed load leaves: what went wrong, in words, and nothing else on the page works. */
function fail(error) {
  const text = String(error?.message ?? error);
  let message = `The translator could not load: ${text}`;
  if (typeof WebAssembly !== "object") {
    message = "This page needs WebAssembly, which this browser does not offer (or has switched off).";
  } else if (/out of memory|allocation failed|memory access out of bounds/i.test(text)) {
    message = "This device ran out of memory loading the model. Close other tabs or try a device with more memory.";
  }
  $("error").textContent = message;
  $("error").hidden = false;
  $("loading").hidden = true;
  $("translate").disabled = true;
  $("state").textContent = "";
  document.body.dataset.state = "failed";
}

/** The rows of the progress list, one per file, as the loads report them. */
const progressRows = new Map();
function showProgress(name, loaded, total) {
  let row = progressRows.get(name);
  if (!row) {
    row = { item: document.createElement("li"), bar: document.createElement("progress"), text: document.createElement("span") };
    const label = document.createElement("span");
    label.textContent = name;
    row.item.append(label, row.bar, row.text);
    $("files").append(row.item);
    progressRows.set(name, row);
  }
  row.bar.max = total ?? 1;
  row.bar.value = Math.min(loaded, total ?? loaded);
  row.text.textContent = total ? `${megabytes(loaded)} of ${megabytes(total)}` : megabytes(loaded);
  row.item.dataset.loaded = loaded;
}

const CACHE = "attention-mt-inspector";

/**
 * fetch, keeping every file but the manifests in the browser's Cache Storage: a second visit reads the model from
 * there (an HTTP cache drops files this large in many browsers). The translator checks each file's sha256 against
 * the manifest, which is always fetched anew; a stale file fails that check and loadDirection clears the cache.
 */
async function cachedFetch(url) {
  const store = globalThis.caches && await caches.open(CACHE).catch(() => null); // none outside a secure context
  if (!store || String(url).endsWith("manifest.json")) return fetch(url, { cache: "no-cache" });
  const kept = await store.match(url);
  if (kept) return kept;
  const response = await fetch(url);
  if (response.ok) await store.put(url, response.clone()).catch(() => {}); // a full quota: simply not kept
  return response;
}

/** fetch with the bytes reported as they arrive. */
async function fetchBytes(url, name, total) {
  const response = await cachedFetch(url);
  if (!response.ok) throw new Error(`${name} is missing (${response.status})`);
  return responseBytes(response, (loaded) => showProgress(name, loaded, total));
}

/** The runtime: onnxruntime-web on one thread, its WebAssembly fetched here so that its bytes show. */
async function loadRuntime() {
  if (typeof WebAssembly !== "object") throw new Error("no WebAssembly");
  const ort = await import("onnxruntime-web");
  const { wasm, bytes, sha256: expected } = page.settings.runtime;
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which static hosts rarely give
  const url = new URL(wasm, location.href), name = `runtime: ${wasm.split("/").pop()}`;
  let binary = await fetchBytes(url, name, bytes);
  if (await sha256Hex(binary) !== expected) { // a runtime kept from an older version of the page
    if (globalThis.caches) await (await caches.open(CACHE)).delete(url);
    binary = await fetchBytes(url, name, bytes);
    if (await sha256Hex(binary) !== expected) throw new Error(`${wasm} does not match its sha256 in inspector.json`);
  }
  ort.env.wasm.wasmBinary = binary;
  return ort;
}

/** The sentence splitter (sentencex's WebAssembly, serve/js/sentences.mjs), checked as the runtime is. */
async function loadSegmenter() {
  const { wasm, bytes, sha256: expected } = page.settings.segmenter;
  const url = new URL(wasm, location.href), name = `sentence splitter: ${wasm.split("/").pop()}`;
  let binary = await fetchBytes(url, name, bytes);
  if (await sha256Hex(binary) !== expected) {
    if (globalThis.caches) await (await caches.open(CACHE)).delete(url);
    binary = await fetchBytes(url, name, bytes);
    if (await sha256Hex(binary) !== expected) throw new Error(`${wasm} does not match its sha256 in inspector.json`);
  }
  await loadSentenceSplitter({ wasm: binary });
}

/** A direction's translator and confidence model, loaded once (with its files' progress). */
async function loadDirection(direction) {
  if (page.directions.has(direction.label)) return page.directions.get(direction.label);
  const bundle = new URL(direction.bundle, location.href);
  let announced = false;
  const load = () => Translator.load(bundle, { ort: page.ort, precision: direction.precision, fetch: cachedFetch, onProgress: (files) => {
    if (!announced) {
      announced = true;
      const size = files.reduce((sum, file) => sum + (file.bytes ?? 0), 0);
      $("download").textContent = `${$("download").textContent} ${direction.label}: ${megabytes(size)}.`;
    }
    for (const file of files) showProgress(`${direction.label}: ${file.name}`, file.loaded, file.bytes);
  } });
  let translator;
  try {
    translator = await load();
  } catch (error) {
    if (!/sha256/.test(error.message) || !globalThis.caches) throw error;
    await caches.delete(CACHE); // a file kept from an older bundle: fetch them all again
    translator = await load();
  }
  let confidence = null;
  const entry = translator.manifest.files?.["confidence.json"];
  if (entry) {
    const bytes = await fetchBytes(new URL("confidence.json", bundle), `${direction.label}: confidence.json`, entry.bytes);
    if (await sha256Hex(bytes) !== entry.sha256) throw new Error(`${direction.bundle}confidence.json does not match its sha256 in the manifest`);
    confidence = new ConfidenceModel(JSON.parse(new TextDecoder().decode(bytes)));
  }
  const loaded = { direction, translator, confidence };
  page.directions.set(direction.label, loaded);
  return loaded;
}

function currentDirection() {
  return page.settings.directions.find((direction) => direction.label === $("direction").value);
}

/** The heads the switches turn off, as "kind.layer.head" (Python's heads_off). */
function headsOff() {
  return [...document.querySelectorAll("#heads-off input:not(:checked)")].map((box) => box.value);
}

function say(message, kind = "") {
  $("state").textContent = message;
  $("state").className = kind;
}

/** Input the page cannot translate: its message, and no older translation left on view as if it were the answer. */
function refuse(message) {
  say(message, "error");
  $("result").hidden = true;
  $("inside").hidden = true;
}

/** Translate what the form says; a request while one runs is done once after it, with the form as it is then. */
async function translate() {
  if (page.busy) {
    page.again = true;
    return;
  }
  page.busy = true;
  try {
    do {
      page.again = false;
      await translateOnce();
    } while (page.again);
  } finally {
    page.busy = false;
  }
}

async function translateOnce() {
  const loaded = page.directions.get(currentDirection().label);
  if (!loaded) return;
  const { translator, confidence, direction } = loaded;
  const { maxChars, maxTokens, maxBeams } = page.settings.limits;
  const most = Math.min(maxBeams, translator.backend.topK / 2);
  const beam = Number($("beam").value);
  if (!Number.isInteger(beam) || beam < 1 || beam > most) {
    refuse(`The beam size must be a whole number from 1 to ${most}, got ${$("beam").value || "nothing"}.`);
    return;
  }
  const text = $("source").value;
  if (!translator.tokenizer.normalize(text)) {
    refuse("Type a sentence to translate (the input is empty).");
    return;
  }
  const fitted = fitText(translator, text, { maxChars, maxTokens }, { cut: true });
  const notices = [];
  if (fitted.charsBefore !== null) notices.push(`The input has ${fitted.charsBefore.toLocaleString("en")} characters; the page reads the first ${maxChars.toLocaleString("en")}.`);
  if (fitted.tokensBefore !== null) {
    notices.push(`The input has ${fitted.tokensBefore} subword tokens; the page translates at most ${Math.min(maxTokens, translator.maxSourceTokens)}, so it was cut to: ${fitted.text}`);
  }
  const off = headsOff();
  // A paragraph translates sentence by sentence, as on every other surface (serve/sentences.py, sentences.mjs).
  const sentences = splitSentences(fitted.text, translator.sourceLang);
  if (!sentences.length) sentences.push(fitted.text);
  say("translating…");
  $("translate").disabled = true;
  try {
    const started = performance.now();
    const results = await translator.translate(sentences, { beamSize: beam, recordBeams: true, headsOff: off });
    const searched = performance.now();
    const attention = await attentionOf(translator, sentences[0], results[0], off);
    const done = performance.now();
    const unknown = results.reduce((sum, result) => sum + result.unknownCharacters, 0);
    if (unknown) {
      notices.unshift(`${unknown} character${unknown > 1 ? "s" : ""} of the input ${unknown > 1 ? "are" : "is"} unknown to the model (never seen in training; shown as <unk>) and ignored by the translation.`);
    }
    page.shown = { translator, direction, sentences, results, result: results[0], attention, off, source: sentences[0],
      pictures: new Map() };
    // the least confident sentence speaks for the text, as Python's join_translations has it
    const assessed = confidence ? results.map((result) => confidence.assess(result, translator))
      .reduce((a, b) => (b.score < a.score ? b : a)) : null;
    showResult(results.map((result) => result.text).filter(Boolean).join(" "), assessed, notices, direction);
    showSentences(sentences);
    const timing = $("timing");
    timing.dataset.searchMs = (searched - started).toFixed(1);
    timing.dataset.attentionMs = (done - searched).toFixed(1);
    timing.textContent = `Beam ${beam}${off.length ? `, ${off.length} head${off.length > 1 ? "s" : ""} off` : ""}: searched in `
      + `${(searched - started).toFixed(0)} ms (${direction.precision} graphs), every attention weight in ${(done - searched).toFixed(0)} ms, on this device.`;
    showAttention();
    showTree();
    say("done");
    document.body.dataset.state = "translated";
    document.body.dataset.translations = Number(document.body.dataset.translations ?? 0) + 1;
    document.body.dataset.headsOff = off.join(" ");
  } catch (error) {
    refuse(String(error.message ?? error));
  } finally {
    $("translate").disabled = false;
  }
}

/** Every attention weight of one sentence's translation (the chosen beam). */
function attentionOf(translator, source, result, off) {
  return translator.attend(source, result.tokenIds, { finished: result.hypotheses[0].finished, headsOff: off });
}

/** The sentence menu: which sentence of a paragraph the attention and the beam tree show (hidden for one). */
function showSentences(sentences) {
  $("sentence").replaceChildren(...sentences.map((sentence, i) => new Option(`${i + 1}: ${sentence}`, String(i))));
  $("sentence-choice").hidden = sentences.length < 2;
}

async function chooseSentence() {
  const shown = page.shown, index = Number($("sentence").value);
  const attention = await attentionOf(shown.translator, shown.sentences[index], shown.results[index], shown.off);
  if (page.shown !== shown) return; // a newer translation took the page meanwhile
  page.shown = { ...shown, result: shown.results[index], attention, source: shown.sentences[index], pictures: new Map() };
  showAttention();
  showTree();
  document.body.dataset.sentence = String(index);
}

function showResult(text, assessed, notices, direction) {
  $("result").hidden = false;
  $("inside").hidden = false;
  $("translation").textContent = text;
  $("translation").lang = direction.target ?? "";
  $("confidence").textContent = assessed ? `${assessed.label === "in_domain" ? "✓" : "⚠"} `
    + `${assessed.message[0].toUpperCase()}${assessed.message.slice(1)} (confidence ${assessed.score.toFixed(2)})` : "";
  $("confidence").dataset.label = assessed?.label ?? "";
  $("notices").replaceChildren(...notices.map((notice) => {
    const item = document.createElement("li");
    item.textContent = `⚠ ${notice}`;
    return item;
  }));
}

/** The query and key tokens of a kind (decoder keys are the decoder's inputs: <s>, then the tokens before). */
function tokensOf(kind, attention) {
  const { sourceTokens: source, targetTokens: target } = attention;
  if (kind === "encoder") return [source, source];
  if (kind === "decoder") return [target, ["<s>", ...target.slice(0, -1)]];
  return [target, source];
}

function meanOfHeads(heads) {
  return heads[0].map((row, i) => row.map((_, j) => heads.reduce((sum, head) => sum + head[i][j], 0) / heads.length));
}

function matrixOf(kind, layer, head) {
  const heads = page.shown.attention[kind][layer];
  return head === MEAN ? meanOfHeads(heads) : heads[head];
}

/** A head's picture for the grid, painted once per translation (choosing a head redraws the grid, not the pictures). */
function picture(kind, layer, head, size) {
  const key = `${kind}.${layer}.${head}`, { pictures } = page.shown;
  if (!pictures.has(key)) pictures.set(key, thumbnail(matrixOf(kind, layer, head), size));
  return pictures.get(key).cloneNode(true);
}

function fillSelect(select, values, chosen, name) {
  select.replaceChildren(...values.map((value) => new Option(value === MEAN ? "mean of the heads" : `${name} ${value + 1}`, value)));
  select.value = String(chosen);
}

/** The kind switch, the head grid, the large heatmap and the alignment of the current view. */
function showAttention() {
  const { attention, off } = page.shown;
  const { kind } = page.view;
  const layers = attention[kind].length, heads = attention[kind][0].length;
  page.view.layer = Math.min(page.view.layer, layers - 1);
  $("kinds").replaceChildren(...Object.entries(KINDS).map(([name, title]) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = title;
    button.setAttribute("role", "radio");
    button.setAttribute("aria-checked", String(name === kind));
    button.dataset.kind = name;
    button.addEventListener("click", () => { page.view.kind = name; showAttention(); });
    return button;
  }));
  const size = 48, gap = 6, left = 58, top = 18;
  const grid = svg("svg", { class: "grid", width: left + (heads + 1) * (size + gap), height: top + layers * (size + gap),
    role: "group", "aria-label": `${KINDS[kind]}: ${layers} layers of ${heads} heads` });
  for (let h = 0; h <= heads; h++) {
    grid.append(svg("text", { x: left + h * (size + gap) + size / 2, y: 12, "text-anchor": "middle" }, h < heads ? `head ${h + 1}` : "mean"));
  }
  const offSet = new Set(off);
  for (let l = 0; l < layers; l++) {
    grid.append(svg("text", { x: 0, y: top + l * (size + gap) + size / 2 + 4 }, `layer ${l + 1}`));
    for (let h = 0; h <= heads; h++) {
      const head = h < heads ? h : MEAN;
      const current = l === page.view.layer && String(head) === String(page.view.head);
      const isOff = head !== MEAN && offSet.has(`${kind}.${l}.${head}`);
      const cell = svg("g", { class: `head${current ? " current" : ""}${isOff ? " off" : ""}`, tabindex: 0, role: "button",
        "data-kind": kind, "data-layer": l, "data-head": head, transform: `translate(${left + h * (size + gap)} ${top + l * (size + gap)})`,
        "aria-label": `${KINDS[kind]}, layer ${l + 1}, ${head === MEAN ? "mean of the heads" : `head ${head + 1}`}${isOff ? " (switched off)" : ""}` },
      picture(kind, l, head, size), svg("rect", { class: "frame", width: size, height: size }));
      const choose = () => { page.view.layer = l; page.view.head = head; showAttention(); $("grid").querySelector(`g[data-layer="${l}"][data-head="${head}"]`)?.focus(); };
      cell.addEventListener("click", choose);
      cell.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(); } });
      grid.append(cell);
    }
  }
  $("grid").replaceChildren(grid);
  fillSelect($("layer"), [...Array(layers).keys()], page.view.layer, "layer");
  fillSelect($("head"), [...Array(heads).keys(), MEAN], page.view.head, "head");
  const [queries, keys] = tokensOf(kind, attention);
  const matrix = matrixOf(kind, page.view.layer, page.view.head);
  const headName = page.view.head === MEAN ? "mean of the heads" : `head ${page.view.head + 1}`;
  const map = heatmap(matrix, queries, keys, { label: `${KINDS[kind]}, layer ${page.view.layer + 1}, ${headName}`,
    onCell: (i, j) => { $("cell").textContent = `${queries[i]} → ${keys[j]}: ${matrix[i][j].toFixed(3)}`; } });
  Object.assign(map.dataset, { kind, layer: page.view.layer, head: page.view.head });
  $("heatmap").replaceChildren(map);
  const crossLayer = Math.min(page.view.layer, attention.cross.length - 1);
  const cross = matrixOf("cross", crossLayer, page.view.head);
  $("alignment-title").textContent = `Alignment: cross-attention of layer ${crossLayer + 1}, ${headName} (lines for weights of 0.05 and more)`;
  $("alignment").replaceChildren(alignment(cross, attention.sourceTokens, attention.targetTokens));
  showSwitches();
}

/** One table of switches per kind: a checkbox per head, ticked when the head is on. */
function showSwitches() {
  if ($("heads-off").dataset.model === page.shown.direction.label) return; // keep the boxes (and their focus)
  const { config } = page.shown.translator;
  const tables = Object.entries(KINDS).map(([kind, title]) => {
    const layers = kind === "encoder" ? config.n_encoder_layers : config.n_decoder_layers;
    const table = document.createElement("table");
    table.className = "heads";
    table.createCaption().textContent = title.replace(" attention", "");
    const header = table.createTHead().insertRow();
    header.append(document.createElement("th"), ...[...Array(config.n_heads).keys()].map((h) => {
      const cell = document.createElement("th");
      cell.textContent = `h${h + 1}`;
      return cell;
    }));
    const body = table.createTBody();
    for (let l = 0; l < layers; l++) {
      const row = body.insertRow();
      const name = document.createElement("th");
      name.textContent = `L${l + 1}`;
      row.append(name);
      for (let h = 0; h < config.n_heads; h++) {
        const box = document.createElement("input");
        Object.assign(box, { type: "checkbox", checked: true, value: `${kind}.${l}.${h}` });
        box.setAttribute("aria-label", `${title}, layer ${l + 1}, head ${h + 1} on`);
        box.addEventListener("change", () => translate());
        row.insertCell().append(box);
      }
    }
    return table;
  });
  $("heads-off").replaceChildren(...tables);
  $("heads-off").dataset.model = page.shown.direction.label;
}

/** The beam tree of the shown translation; a selected node shows its partial hypothesis and its attention. */
function showTree() {
  const { translator, result } = page.shown;
  const record = result.beams;
  $("node").textContent = "";
  $("node-view").replaceChildren();
  if (!record.steps.length) {
    $("tree").replaceChildren(document.createTextNode("Nothing to draw: the translation is empty."));
    return;
  }
  const chosen = new Set(pathTo(record, ...record.hypotheses[0]).map(({ step, index }) => `${step}:${index}`));
  const tokenOf = (id) => translator.tokenizer.tokens([id])[0];
  $("tree").replaceChildren(beamTree(record, tokenOf, chosen, (step, index, label) => showNode(step, index, label)));
}

async function showNode(step, index, label) {
  const { translator, result, source, off } = page.shown;
  const path = pathTo(result.beams, step, index).map(({ node }) => node.tokenId);
  const eos = translator.config.eos_id;
  const finished = path.at(-1) === eos;
  const ids = finished ? path.slice(0, -1) : path;
  const attention = await translator.attend(source, ids, { finished, headsOff: off });
  if (page.shown?.result !== result) return; // a newer translation replaced this one meanwhile
  $("node").textContent = `${label}. Partial translation: “${translator.tokenizer.decode(ids)}”${finished ? " (finished)" : ""}; `
    + "its cross-attention at this step, every layer and head:";
  const { n_decoder_layers: layers, n_heads: heads } = translator.config;
  const rows = [], names = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) {
    rows.push(attention.cross[l][h].at(-1));
    names.push(`L${l + 1} h${h + 1}`);
  }
  const map = heatmap(rows, names, attention.sourceTokens, { label: `cross-attention of step ${step + 1}, every layer and head`,
    onCell: (i, j) => { $("node").dataset.cell = `${names[i]} → ${attention.sourceTokens[j]}: ${rows[i][j].toFixed(3)}`; } });
  Object.assign(map.dataset, { step, index });
  $("node-view").replaceChildren(map);
}

async function chooseDirection() {
  const direction = currentDirection();
  const source = $("source");
  if (!source.value.trim() || Object.values(EXAMPLES).includes(source.value)) source.value = EXAMPLES[direction.source] ?? "";
  $("translate").disabled = true;
  $("heads-off").replaceChildren(); // another model: every head on again
  delete $("heads-off").dataset.model;
  say(`loading ${direction.label}…`);
  try {
    await loadDirection(direction);
  } catch (error) {
    fail(error);
    return;
  }
  $("translate").disabled = false;
  say("ready");
  document.body.dataset.state = "ready";
}

async function start() {
  try {
    const response = await fetch("inspector.json", { cache: "no-cache" });
    if (!response.ok) throw new Error(`inspector.json is missing (${response.status})`);
    page.settings = await response.json();
  } catch (error) {
    fail(error);
    return;
  }
  const { directions, runtime, segmenter, limits } = page.settings;
  $("beam").max = limits.maxBeams;
  $("direction").replaceChildren(...directions.map((direction) => new Option(direction.label, direction.label)));
  $("download").textContent = `This page downloads the runtime and sentence splitter (${megabytes(runtime.bytes + segmenter.bytes)}) and each direction's model when `
    + "you first use it; your browser keeps them for later visits.";
  try {
    page.ort = await loadRuntime();
    await loadSegmenter();
  } catch (error) {
    fail(error);
    return;
  }
  $("direction").addEventListener("change", chooseDirection);
  $("sentence").addEventListener("change", chooseSentence);
  $("form").addEventListener("submit", (event) => { event.preventDefault(); translate(); });
  $("all-on").addEventListener("click", () => {
    document.querySelectorAll("#heads-off input").forEach((box) => { box.checked = true; });
    translate();
  });
  for (const [select, key] of [[$("layer"), "layer"], [$("head"), "head"]]) {
    select.addEventListener("change", () => {
      page.view[key] = select.value === MEAN ? MEAN : Number(select.value);
      showAttention();
    });
  }
  await chooseDirection();
}

start();
