// The example page: load a bundle over HTTP, translate in the browser, draw the cross-attention as an SVG heatmap.
import * as ort from "onnxruntime-web";
import { Translator } from "../translator.mjs";

ort.env.wasm.wasmPaths = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give

const $ = (id) => document.getElementById(id);
const translators = new Map();

async function translatorFor(bundle) {
  if (!translators.has(bundle)) translators.set(bundle, Translator.load(new URL(bundle, location.href), { ort }));
  return translators.get(bundle);
}

function heatmap(result, translator) {
  const layers = result.crossAttention;
  const last = layers[layers.length - 1]; // [heads][T][S]
  const rows = last[0].length, columns = last[0][0].length;
  const mean = Array.from({ length: rows }, (_, t) => Array.from({ length: columns }, (_, s) =>
    last.reduce((sum, head) => sum + head[t][s], 0) / last.length));
  const sourceTokens = translator.tokenizer.tokens(translator.tokenizer.encode(result.source)).concat("</s>");
  const targetTokens = result.tokens.concat(result.hypotheses[0].finished ? ["</s>"] : []);
  const cell = 26, left = 110, top = 90;
  const svg = [`<svg xmlns="http://www.w3.org/2000/svg" width="${left + columns * cell + 10}" height="${top + rows * cell + 10}">`];
  sourceTokens.forEach((token, s) => svg.push(`<text transform="translate(${left + s * cell + cell / 2},${top - 6}) rotate(-60)">${escape(token)}</text>`));
  targetTokens.forEach((token, t) => svg.push(`<text x="${left - 6}" y="${top + t * cell + cell / 2 + 4}" text-anchor="end">${escape(token)}</text>`));
  mean.forEach((row, t) => row.forEach((weight, s) => svg.push(
    `<rect class="cell" x="${left + s * cell}" y="${top + t * cell}" width="${cell - 1}" height="${cell - 1}" ` +
    `fill="rgba(37,99,235,${weight.toFixed(3)})"><title>${escape(targetTokens[t])} → ${escape(sourceTokens[s])}: ${weight.toFixed(3)}</title></rect>`)));
  svg.push("</svg>");
  $("attention").innerHTML = svg.join("");
}

function escape(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

async function translate() {
  $("translate").disabled = true;
  try {
    const translator = await translatorFor($("direction").value);
    const started = performance.now();
    const [result] = await translator.translate([$("source").value], { beamSize: Number($("beam").value), returnAttention: true });
    const milliseconds = performance.now() - started;
    $("translation").textContent = result.text;
    $("status").textContent = `${milliseconds.toFixed(0)} ms` +
      (result.unknownCharacters ? `; ${result.unknownCharacters} characters unknown to the model` : "");
    $("status").dataset.milliseconds = milliseconds.toFixed(1);
    if (result.crossAttention.length) heatmap(result, translator);
  } catch (error) {
    $("status").textContent = `error: ${error.message}`;
  } finally {
    $("translate").disabled = false;
  }
}

$("translate").addEventListener("click", translate);
translatorFor($("direction").value).then(() => { $("status").textContent = "ready"; },
  (error) => { $("status").textContent = `error: ${error.message}`; });
