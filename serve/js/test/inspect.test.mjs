// node --test: tests/golden/inspect.json (written by Python, tests/golden/make_inspect_golden.py) on both shipped
// bundles: int8 and float32 search with heads switched off, per-token log-probabilities and the confidence label,
// every attention weight of all three kinds (Translator.attend), the input policy's cut and bad_character.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { headMasks, Translator } from "../translator.mjs";
import { badCharacter, ConfidenceModel, fitText, InputError, tokenLogProbs } from "../inspect.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const GOLDEN = JSON.parse(readFileSync(join(ROOT, "tests", "golden", "inspect.json"), "utf8"));
const bundle = (pair) => join(ROOT, "models", pair, "onnx");
const LIMITS = { maxChars: GOLDEN.limits.max_chars, maxTokens: GOLDEN.limits.max_tokens };

function assertClose(actual, expected, tolerance, where) {
  if (Array.isArray(expected)) {
    assert.equal(actual.length, expected.length, where);
    expected.forEach((value, i) => assertClose(actual[i], value, tolerance, `${where}[${i}]`));
  } else {
    assert.ok(Math.abs(actual - expected) <= tolerance, `${where}: ${actual} vs ${expected}`);
  }
}

for (const [pair, golden] of Object.entries(GOLDEN.bundles)) {
  test(`${pair}: translations with heads off, log-probabilities and confidence as Python's`, async () => {
    const translators = { int8: await Translator.load(bundle(pair), { precision: "int8" }),
      float32: await Translator.load(bundle(pair)) };
    const confidence = new ConfidenceModel(JSON.parse(readFileSync(join(bundle(pair), "confidence.json"), "utf8")));
    for (const row of golden.translations) {
      const translator = translators[row.precision];
      const where = `${row.text} ${row.precision} beam ${row.beam} off ${row.heads_off}`;
      const [result] = await translator.translate([row.text], { beamSize: row.beam, headsOff: row.heads_off, recordBeams: true });
      assert.deepEqual(result.tokenIds, row.ids, where);
      assertClose(tokenLogProbs(result.beams), row.token_log_probs, 1e-4, where);
      const assessed = confidence.assess(result, translator);
      assert.equal(assessed.label, row.confidence.label, where);
      assertClose(assessed.score, row.confidence.score, 1e-4, where);
    }
  });

  test(`${pair}: every attention weight of every kind as Python's, heads off and partial hypotheses too`, async () => {
    const translator = await Translator.load(bundle(pair));
    for (const row of golden.attentions) {
      const where = `${row.text} finished ${row.finished} off ${row.heads_off}`;
      const found = await translator.attend(row.text, row.ids, { finished: row.finished, headsOff: row.heads_off });
      assert.deepEqual([found.sourceTokens, found.targetTokens], [row.source_tokens, row.target_tokens], where);
      for (const kind of ["encoder", "decoder", "cross"]) assertClose(found[kind], row[kind], 1e-5, `${where} ${kind}`);
    }
  });

  test(`${pair}: the input policy cuts and refuses as Python's fit_text`, async () => {
    const translator = await Translator.load(bundle(pair), { precision: "int8" });
    for (const [name, row] of Object.entries(golden.fit)) {
      if (row.error) {
        assert.throws(() => fitText(translator, row.text, LIMITS, { cut: row.cut }),
          (error) => error instanceof InputError && error.message === row.error, name);
        continue;
      }
      const fitted = fitText(translator, row.text, LIMITS, { cut: row.cut });
      assert.deepEqual({ text: fitted.text, tokens: fitted.tokens, chars_before: fitted.charsBefore,
        tokens_before: fitted.tokensBefore }, row.fitted, name);
    }
  });
}

test("bad characters are described as Python's bad_character", () => {
  for (const [text, message] of GOLDEN.bad_character) assert.equal(badCharacter(text), message, JSON.stringify(text));
});

test("a wrong head is refused with Python's message", () => {
  const config = { n_heads: 4, n_encoder_layers: 4, n_decoder_layers: 4 };
  assert.equal(headMasks(config, []), null);
  assert.deepEqual(Array.from(headMasks(config, ["cross.1.2"]).cross).indexOf(0), 6);
  assert.throws(() => headMasks(config, ["self.0.0"]), /head kind must be one of encoder, decoder, cross, got "self"/);
  assert.throws(() => headMasks(config, [["encoder", 4, 0]]), /encoder layer must be an integer from 0 to 3, got 4/);
  assert.throws(() => headMasks(config, ["cross.0"]), /a head is \(kind, layer, head\) or 'kind.layer.head'/);
});
