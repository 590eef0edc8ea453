#!/usr/bin/env node
// node serve/js/cli.mjs --model models/en-de/onnx [--beam 5] [--length-penalty 1.0] [--batch-size 32] < in.txt > out.txt
// One line in, one line out, in order; empty lines stay empty; errors are one line on stderr with exit status 1.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Translator } from "./translator.mjs";

const usage = "usage: node cli.mjs --model BUNDLE [--beam N] [--length-penalty X] [--batch-size N] < in.txt > out.txt";

async function main() {
  let values;
  try {
    ({ values } = parseArgs({ options: { model: { type: "string" }, beam: { type: "string", default: "5" },
      "length-penalty": { type: "string", default: "1.0" }, "batch-size": { type: "string", default: "32" },
      help: { type: "boolean", default: false } } }));
  } catch (error) {
    throw new Error(`${error.message}\n${usage}`);
  }
  if (values.help) { console.log(usage); return; }
  if (!values.model) throw new Error(`--model is required\n${usage}`);
  const beamSize = Number(values.beam), batchSize = Number(values["batch-size"]);
  const lengthPenalty = Number(values["length-penalty"]);
  if (!Number.isInteger(beamSize) || beamSize < 1) throw new Error(`--beam must be a whole number >= 1, got ${values.beam}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`--batch-size must be a whole number >= 1`);
  if (!Number.isFinite(lengthPenalty)) throw new Error(`--length-penalty must be a number, got ${values["length-penalty"]}`);
  const input = new TextDecoder("utf-8", { fatal: true }).decode(readFileSync(0));
  const lines = input.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const translator = await Translator.load(values.model);
  lines.forEach((line, i) => {
    const tokens = translator.tokenizer.encode(line).length;
    if (tokens > translator.maxSourceTokens) {
      throw new Error(`<stdin>:${i + 1}: ${tokens} tokens, more than the model's ${translator.maxSourceTokens}`);
    }
  });
  const results = await translator.translate(lines, { beamSize, lengthPenalty, batchSize });
  process.stdout.write(results.map((r) => `${r.text}\n`).join(""));
}

main().catch((error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exit(1);
});
