// node --test: tests/golden/sentences.json (written by Python, tests/golden/make_sentences_golden.py): sentencex's
// WebAssembly build cuts every case where Python's sentencex does, and translateParagraphs gives Python's text and
// token ids on both shipped bundles, greedy and beam 5.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { loadSentenceSplitter, splitSentences, splitTexts, translateParagraphs } from "../sentences.mjs";
import { Translator } from "../translator.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const GOLDEN = JSON.parse(readFileSync(join(ROOT, "tests", "golden", "sentences.json"), "utf8"));

test("every golden case is cut where Python cuts it", async () => {
  await loadSentenceSplitter();
  for (const [name, { language, text, sentences }] of Object.entries(GOLDEN.cases)) {
    assert.deepEqual(splitSentences(text, language), sentences, name);
  }
  assert.deepEqual(splitTexts(["A dog runs. A cat sits.", " ", "One."], "en"),
    { sentences: ["A dog runs.", "A cat sits.", "", "One."], counts: [2, 1, 1] });
});

for (const [pair, golden] of Object.entries(GOLDEN.bundles)) {
  test(`${pair}: a paragraph translates sentence by sentence as in Python`, async () => {
    const translator = await Translator.load(join(ROOT, "models", pair, "onnx"));
    for (const beam of [1, 5]) {
      const [result] = await translateParagraphs(translator, [golden.paragraph], { beamSize: beam });
      assert.deepEqual({ text: result.text, token_ids: result.tokenIds }, golden[`beam ${beam}`], `beam ${beam}`);
    }
    await assert.rejects(translateParagraphs(translator, ["A dog."], { returnAttention: true }),
      /returnAttention: an option of single sentences/);
  });
}

test("the CLI's --split-sentences gives Python's paragraph translation", () => {
  const { paragraph, "beam 5": expected } = GOLDEN.bundles["en-de"];
  const cli = join(ROOT, "serve", "js", "cli.mjs"), model = join(ROOT, "models", "en-de", "onnx");
  const done = spawnSync(process.execPath, [cli, "--model", model, "--beam", "5", "--split-sentences"],
    { input: `${paragraph}\n\n`, encoding: "utf8" });
  assert.equal(done.status, 0, done.stderr);
  assert.equal(done.stdout, `${expected.text}\n\n`);
});
