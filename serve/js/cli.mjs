#!/usr/bin/env node
// node serve/js/cli.mjs --model models/en-de/onnx [--beam 5] [--length-penalty 1.0] [--batch-size 32] [--split-sentences] < in.txt > out.txt
// One line in, one line out, in order; empty lines stay empty; errors are one line on stderr with exit status 1.
// --split-sentences translates each line sentence by sentence (sentences.mjs, Python's --split-sentences).

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { translateParagraphs } from "./sentences.mjs";
import { Translator } from "./translator.mjs";

const usage = "usage: node cli.mjs --model BUNDLE [--beam N] [--length-penalty X] [--batch-size N] [--split-sentences] < in.txt > out.txt";

/** Lines of UTF-8 bytes as Python's core.data.decode_lines reads them: a BOM is kept, an error names the line. */
function readLines(bytes, name) {
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const lines = [];
  for (let start = 0, number = 1; start < bytes.length; number++) {
    const newline = bytes.indexOf(0x0a, start);
    const end = newline === -1 ? bytes.length : newline + 1;
    try {
      lines.push(decoder.decode(bytes.subarray(start, end)).replace(/[\r\n]+$/, ""));
    } catch {
      throw new Error(`${name}:${number}: not valid UTF-8`);
    }
    start = end;
  }
  return lines;
}

async function main() {
  let values;
  try {
    ({ values } = parseArgs({ options: { model: { type: "string" }, beam: { type: "string", default: "5" },
      "length-penalty": { type: "string", default: "1.0" }, "batch-size": { type: "string", default: "32" },
      "split-sentences": { type: "boolean", default: false }, help: { type: "boolean", default: false } } }));
  } catch (error) {
    throw new Error(`${error.message}\n${usage}`);
  }
  if (values.help) { console.log(usage); return; }
  if (!values.model) throw new Error(`--model is required\n${usage}`);
  const options = { beamSize: Number(values.beam), lengthPenalty: Number(values["length-penalty"]),
    batchSize: Number(values["batch-size"]) };
  const lines = readLines(readFileSync(0), "<stdin>");
  const translator = await Translator.load(values.model);
  lines.forEach((line, i) => {
    const tokens = translator.tokenizer.encode(line).length;
    if (tokens > translator.maxSourceTokens) {
      throw new Error(`<stdin>:${i + 1}: ${tokens} tokens, more than the model's ${translator.maxSourceTokens}`);
    }
  });
  const results = values["split-sentences"] ? await translateParagraphs(translator, lines, options)
    : await translator.translate(lines, options);
  process.stdout.write(results.map((r) => `${r.text}\n`).join(""));
}

main().catch((error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exit(1);
});
