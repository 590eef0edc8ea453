// node --test: tests/golden/input_policy.json (written by Python, tests/golden/make_golden.py) on both shipped
// bundles: normalization, ids, tokens, unknown characters, greedy and beam-5 output, the over-long error. Then the
// option and config checks and the CLI's errors, which mirror Python's.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { BundleError, Translator } from "../translator.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "..", "..", "..");
const PYTHON = process.env.ATTENTION_MT_PYTHON ?? "python3";
const GOLDEN = JSON.parse(readFileSync(join(ROOT, "tests", "golden", "input_policy.json"), "utf8"));
const bundle = (pair) => join(ROOT, "models", pair, "onnx");
const tooLong = (message) => message.match(/has (\d+) tokens, more than the model's max_positions \((\d+)\)/)?.slice(1);

for (const [pair, rows] of Object.entries(GOLDEN.bundles)) {
  test(`${pair}: every golden case as Python has it`, async () => {
    const translator = await Translator.load(bundle(pair));
    const { tokenizer } = translator;
    for (const row of rows) {
      const text = GOLDEN.cases[row.case], ids = tokenizer.encode(text);
      assert.deepEqual({ normalized: tokenizer.normalize(text), ids, tokens: tokenizer.tokens(ids),
        unknown_characters: tokenizer.unknownCharacters(text) },
      { normalized: row.normalized, ids: row.ids, tokens: row.tokens, unknown_characters: row.unknown_characters }, row.case);
      if (row.error) {
        await assert.rejects(translator.translate([text]), (error) => {
          assert.deepEqual(tooLong(error.message), tooLong(row.error), error.message);
          return true;
        });
      }
    }
    const translated = rows.filter((row) => !row.error);
    const texts = translated.map((row) => GOLDEN.cases[row.case]);
    for (const [beamSize, field] of [[1, "greedy"], [5, "beam5"]]) {
      const results = await translator.translate(texts, { beamSize });
      results.forEach((result, i) => {
        assert.equal(result.text, translated[i][field], `${translated[i].case}, beam ${beamSize}`);
        assert.equal(result.unknownCharacters, translated[i].unknown_characters, translated[i].case);
      });
    }
  });
}

test("options are checked before any work, with Python's messages", async () => {
  const translator = await Translator.load(bundle("en-de"));
  const refused = [
    [{ beamSize: 0 }, "beamSize must be an integer between 1 and 16, got 0"],
    [{ beamSize: 17 }, "beamSize must be an integer between 1 and 16, got 17"],
    [{ beamSize: 1000 }, "beamSize must be an integer between 1 and 16, got 1000"],
    [{ beamSize: NaN }, "beamSize must be an integer between 1 and 16, got NaN"],
    [{ beamSize: 3.5 }, "beamSize must be an integer between 1 and 16, got 3.5"],
    [{ beamSize: -1 }, "beamSize must be an integer between 1 and 16, got -1"],
    [{ lengthPenalty: NaN }, "lengthPenalty must be a finite number >= 0, got NaN"],
    [{ lengthPenalty: Infinity }, "lengthPenalty must be a finite number >= 0, got Infinity"],
    [{ lengthPenalty: -0.5 }, "lengthPenalty must be a finite number >= 0, got -0.5"],
    [{ maxLength: 0 }, "maxLength must be an integer >= 1, got 0"],
    [{ maxLength: 2.5 }, "maxLength must be an integer >= 1, got 2.5"],
    [{ maxLength: Infinity }, "maxLength must be an integer >= 1, got Infinity"],
    [{ nBest: 0 }, "nBest must be an integer between 1 and beamSize (5), got 0"],
    [{ nBest: 6 }, "nBest must be an integer between 1 and beamSize (5), got 6"],
    [{ batchSize: 0 }, "batchSize must be an integer >= 1, got 0"],
    [{ batchSize: NaN }, "batchSize must be an integer >= 1, got NaN"],
    [{ batchSize: 1e300 }, "batchSize must be an integer >= 1, got 1e+300"],
  ];
  for (const [options, message] of refused) {
    await assert.rejects(translator.translate([], options), { name: "RangeError", message }, JSON.stringify(options));
  }
  const [result] = await translator.translate(["A dog."], { beamSize: 16, nBest: 16, lengthPenalty: 0, maxLength: 3 });
  assert.equal(result.hypotheses.length, 16);
});

test("a bundle config that Python's TransformerConfig refuses is a BundleError naming config.json", async () => {
  const copy = mkdtempSync(join(tmpdir(), "bundle-"));
  cpSync(bundle("en-de"), copy, { recursive: true });
  const original = JSON.parse(readFileSync(join(copy, "config.json"), "utf8"));
  const manifest = JSON.parse(readFileSync(join(copy, "manifest.json"), "utf8"));
  const edit = (config, manifestConfig = config) => {
    const text = JSON.stringify(config);
    writeFileSync(join(copy, "config.json"), text);
    const sha256 = createHash("sha256").update(text).digest("hex");
    writeFileSync(join(copy, "manifest.json"), JSON.stringify({ ...manifest, config: manifestConfig,
      files: { ...manifest.files, "config.json": { sha256, bytes: Buffer.byteLength(text) } } }));
  };
  const refusals = [{ d_model: 129 }, { d_model: 130 }, { d_model: 128.5 }, { n_heads: 0 }, { dropout: 1.5 },
    { pre_norm: 1 }, { vocab_size: -1 }, { d_modle: 128 }];
  for (const change of refusals) {
    const config = { ...original, ...change };
    edit(config);
    const python = spawnSync(PYTHON, ["-c", `import json, sys; from core.config import TransformerConfig
try:
    TransformerConfig.from_dict(json.loads(sys.argv[1]))
except ValueError as error:
    print(error)`, JSON.stringify(config)], { cwd: ROOT, encoding: "utf8" });
    assert.equal(python.status, 0, python.stderr);
    const reason = python.stdout.trim();
    assert.ok(reason, `Python accepts ${JSON.stringify(change)}`);
    await assert.rejects(Translator.load(copy), (error) => error instanceof BundleError &&
      error.message === `${copy}/config.json: ${reason}`, JSON.stringify(change));
  }
  edit(original, { ...original, d_model: 256 });
  await assert.rejects(Translator.load(copy), /manifest\.json's config differs from config\.json/);
  edit({ ...original, vocab_size: 8001 });
  await assert.rejects(Translator.load(copy), /tokenizer has 8000 tokens but the model expects 8001/);
  edit(original);
  await Translator.load(copy);
});

test("the CLI: invalid UTF-8 and bad options are one-line errors, exit status 1", () => {
  const cli = join(HERE, "..", "cli.mjs");
  const run = (args, input) => spawnSync(process.execPath, [cli, "--model", bundle("en-de"), ...args], { input });
  const invalid = run([], Buffer.concat([Buffer.from("A dog.\nTwo cats.\nA b"), Buffer.from([0xff, 0xfe]), Buffer.from("ad line.\n")]));
  assert.equal(invalid.status, 1);
  assert.equal(invalid.stderr.toString(), "error: <stdin>:3: not valid UTF-8\n");
  for (const [beam, got] of [["0", "0"], ["1000", "1000"], ["nan", "NaN"], ["3.5", "3.5"]]) {
    const done = run(["--beam", beam], "A dog.\n");
    assert.equal(done.status, 1, beam);
    assert.equal(done.stderr.toString(), `error: beamSize must be an integer between 1 and 16, got ${got}\n`);
  }
  const penalty = run(["--length-penalty", "inf"], "A dog.\n");
  assert.equal(penalty.status, 1);
  assert.equal(penalty.stderr.toString(), "error: lengthPenalty must be a finite number >= 0, got NaN\n");
  const bom = run(["--beam", "1"], Buffer.from(`${GOLDEN.cases["bom at the start"]}\r\n`));
  assert.equal(bom.status, 0, bom.stderr.toString());
  const expected = GOLDEN.bundles["en-de"].find((row) => row.case === "bom at the start").greedy;
  assert.equal(bom.stdout.toString(), `${expected}\n`, "a BOM is kept, as Python's decode_lines keeps it");
});
