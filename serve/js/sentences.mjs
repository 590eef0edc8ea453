// Sentence splitting, as Python's serve/sentences.py: a paragraph is translated sentence by sentence.
//
//   import { loadSentenceSplitter, translateParagraphs } from "attention-mt/sentences";
//   await loadSentenceSplitter();                       // once: sentencex's WebAssembly (Node reads the file)
//   const [result] = await translateParagraphs(translator, ["A dog runs. A cat sleeps."], { beamSize: 5 });
//
// The rules are sentencex's (Wikimedia), the same Rust code as Python's `sentencex` package, built to WebAssembly
// (npm `sentencex-wasm`), so Python and JS cut a text at the same places; tests/golden/sentences.json checks it.

import { initSync, segment } from "sentencex-wasm";

const DEFAULT_LANGUAGE = "en"; // sentencex's rules when a bundle names no source language
// Python's str.strip(): Unicode White_Space and U+001C..U+001F (which str.isspace() also takes); not U+FEFF.
const EDGE_SPACE = /^[\p{White_Space}\x1c-\x1f]+|[\p{White_Space}\x1c-\x1f]+$/gu;
let loaded = false;

/**
 * Load sentencex's WebAssembly once. In Node it is read from the package; in a browser pass `wasm` (a URL, a
 * Response or the bytes), e.g. new URL("node_modules/sentencex-wasm/sentencex_wasm_bg.wasm", import.meta.url).
 */
export async function loadSentenceSplitter({ wasm = null } = {}) {
  if (loaded) return;
  if (wasm === null && typeof process !== "undefined" && process.versions?.node) {
    const { readFile } = await import("node:fs/promises");
    const { createRequire } = await import("node:module");
    const { pathToFileURL } = await import("node:url");  // a path as a URL on every OS (Windows drive letters too)
    const entry = createRequire(import.meta.url).resolve("sentencex-wasm");
    wasm = await readFile(new URL("sentencex_wasm_bg.wasm", pathToFileURL(entry)));
  }
  if (wasm === null) throw new Error("loadSentenceSplitter needs { wasm } outside Node: the URL of sentencex_wasm_bg.wasm");
  const bytes = wasm instanceof URL || typeof wasm === "string" ? await (await fetch(wasm)).arrayBuffer()
    : wasm instanceof Response ? await wasm.arrayBuffer() : wasm;
  initSync({ module: bytes });
  loaded = true;
}

/** Python's split_sentences: the sentences of text in order, each stripped; blank stretches dropped, so none is
 * empty. language (the bundle's source language, e.g. "en" or "de") picks sentencex's abbreviation rules. */
export function splitSentences(text, language = null) {
  if (!loaded) throw new Error("call loadSentenceSplitter() first");
  return segment(language || DEFAULT_LANGUAGE, text).map((sentence) => sentence.replace(EDGE_SPACE, ""))
    .filter((sentence) => sentence.length);
}

/** Python's split_texts: every text's sentences in one list, and how many each text gave (a blank text keeps one
 * empty sentence, which translates to "", so every text has at least one). */
export function splitTexts(texts, language = null) {
  const sentences = [], counts = [];
  for (const text of texts) {
    const found = splitSentences(text, language);
    if (!found.length) found.push("");
    sentences.push(...found);
    counts.push(found.length);
  }
  return { sentences, counts };
}

/** Python's join_translations: each text's sentence translations as one result (texts joined with a space, tokens
 * concatenated, unknown characters summed, the mean score, the least confident sentence's confidence, no hypotheses). */
export function joinTranslations(texts, translations, counts) {
  let start = 0;
  return texts.map((text, i) => {
    const parts = translations.slice(start, start + counts[i]);
    start += counts[i];
    const confidences = parts.map((part) => part.confidence).filter((confidence) => confidence != null);
    return {
      source: text, text: parts.map((part) => part.text).filter(Boolean).join(" "),
      tokens: parts.flatMap((part) => part.tokens), tokenIds: parts.flatMap((part) => part.tokenIds),
      score: parts.reduce((sum, part) => sum + part.score, 0) / parts.length, hypotheses: [],
      unknownCharacters: parts.reduce((sum, part) => sum + part.unknownCharacters, 0),
      ...(confidences.length ? { confidence: confidences.reduce((a, b) => (b.score < a.score ? b : a)) } : {}),
    };
  });
}

/** Python's translate_paragraphs: translator.translate(texts, options) with each text split into sentences first
 * (in the translator's source language), all sentences searched in the same batches and each text's joined. Options
 * of single sentences (nBest above 1, returnAttention, recordBeams, targetPrefix) are refused. */
export async function translateParagraphs(translator, texts, options = {}) {
  const single = ["returnAttention", "recordBeams", "targetPrefix"].filter((name) => options[name])
    .concat((options.nBest ?? 1) !== 1 ? ["nBest"] : []);
  if (single.length) throw new RangeError(`${single.join(", ")}: an option of single sentences, not of a text split into sentences`);
  await loadSentenceSplitter();
  const { sentences, counts } = splitTexts(texts, translator.sourceLang);
  return joinTranslations(texts, await translator.translate(sentences, options), counts);
}
