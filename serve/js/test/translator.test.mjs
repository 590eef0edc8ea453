// node --test: the JS translator and CLI against Python's `python -m serve translate` on the shipped bundles.
// ATTENTION_MT_PYTHON names the Python that has the project installed (the pytest wrapper sets it).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { BundleError, Translator } from "../translator.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "..", "..", "..");
const PYTHON = process.env.ATTENTION_MT_PYTHON ?? "python3";
const BUNDLES = { "en-de": join(ROOT, "models", "en-de", "onnx"), "de-en": join(ROOT, "models", "de-en", "onnx") };
const MULTI30K = join(ROOT, "..", "shared", "data", "multi30k");
const WRITTEN = {  // real sentences of the domain, used when ../shared is absent
  "en-de": ["A man in a blue jacket is riding his bicycle down a busy street.", "Two dogs play in the snow.",
    "A little girl is climbing into a wooden playhouse.", "Three people sit on a bench in the park.",
    "A woman with sunglasses is reading a book on the beach.", "A group of men play soccer on a dirt field."],
  "de-en": ["Eine Frau mit Sonnenbrille sitzt auf einer Bank im Park.", "Ein kleines Mädchen spielt im Sand.",
    "Drei Männer arbeiten auf einer Baustelle neben der Straße.", "Ein Hund rennt über eine grüne Wiese.",
    "Zwei Kinder spielen Fußball auf der Straße.", "Ein Mann fährt Fahrrad."],
};

function sentences(pair, count) {
  const file = join(MULTI30K, `test_2016_flickr.${pair.slice(0, 2)}`);
  if (!existsSync(file)) return WRITTEN[pair];
  return readFileSync(file, "utf8").split("\n").slice(0, count);
}

function python(args, input) {
  const done = spawnSync(PYTHON, args, { cwd: ROOT, input, encoding: "utf8", maxBuffer: 1 << 26 });
  assert.equal(done.status, 0, done.stderr);
  return done.stdout;
}

function pythonTranslate(pair, lines, beam) {
  return python(["-m", "serve", "translate", "--model", BUNDLES[pair], "--beam", String(beam)], `${lines.join("\n")}\n`)
    .split("\n").slice(0, -1);
}

for (const pair of Object.keys(BUNDLES)) {
  test(`${pair}: greedy and beam 5 equal Python's on real sentences`, async () => {
    const translator = await Translator.load(BUNDLES[pair]);
    const lines = sentences(pair, 150);
    for (const beamSize of [1, 5]) {
      const ours = (await translator.translate(lines, { beamSize })).map((r) => r.text);
      const theirs = pythonTranslate(pair, lines, beamSize);
      const differ = ours.flatMap((text, i) => (text === theirs[i] ? [] : [`${lines[i]}\n  js: ${text}\n  py: ${theirs[i]}`]));
      assert.deepEqual(differ, [], `beam ${beamSize}: ${differ.length} of ${lines.length} differ`);
    }
  });
}

test("bad input behaves as in Python", async () => {
  const translator = await Translator.load(BUNDLES["en-de"]);
  const [empty, spaces, typed, emoji] = await translator.translate(["", "   ", "A dog </s> runs.", "🙂🙂🙂"], { beamSize: 2 });
  assert.equal(empty.text, "");
  assert.equal(spaces.text, "");
  assert.equal(emoji.unknownCharacters, 3);
  const reference = JSON.parse(python(["-c", `import json; from serve import Translator
t = Translator(${JSON.stringify(BUNDLES["en-de"])})
r = t.translate(["A dog </s> runs.", "🙂🙂🙂"], beam_size=2)
print(json.dumps([[x.text, x.token_ids, x.unknown_characters] for x in r]))`]));
  assert.deepEqual([typed.text, typed.tokenIds, typed.unknownCharacters], reference[0]);
  assert.deepEqual([emoji.text, emoji.tokenIds, emoji.unknownCharacters], reference[1]);
  assert.ok(translator.tokenizer.encode("A dog </s> runs.").every((id) => id !== 2), "a typed </s> is text");
  await assert.rejects(translator.translate(["word ".repeat(1100)]), /more than the model's max_positions \(1024\)/);
  await assert.rejects(translator.translate(["A dog."], { beamSize: 17 }), /beamSize must be an integer between 1 and 16, got 17/);
  await assert.rejects(translator.translate("A dog."), TypeError);
});

test("cross-attention of the chosen tokens equals Python's", async () => {
  const translator = await Translator.load(BUNDLES["de-en"]);
  const text = "Ein Mann fährt Fahrrad.";
  const [result] = await translator.translate([text], { beamSize: 5, returnAttention: true });
  const reference = JSON.parse(python(["-c", `import json; from serve import Translator
r = Translator(${JSON.stringify(BUNDLES["de-en"])}).translate([${JSON.stringify(text)}], beam_size=5, return_attention=True)[0]
print(json.dumps(r.attention.cross.tolist()))`]));
  assert.equal(result.crossAttention.length, reference.length);
  let largest = 0;
  reference.forEach((layer, l) => layer.forEach((head, h) => head.forEach((row, t) => row.forEach((weight, s) => {
    largest = Math.max(largest, Math.abs(weight - result.crossAttention[l][h][t][s]));
  }))));
  assert.ok(largest < 1e-5, `largest difference ${largest}`);
});

test("the beam record equals Python's on real sentences", async () => {
  for (const pair of Object.keys(BUNDLES)) {
    const translator = await Translator.load(BUNDLES[pair]);
    const lines = [...sentences(pair, 4).slice(0, 4), ""];
    const ours = (await translator.translate(lines, { beamSize: 5, nBest: 3, recordBeams: true })).map((r) => r.beams);
    const theirs = JSON.parse(python(["-c", `import json; from serve import Translator
results = Translator(${JSON.stringify(BUNDLES[pair])}).translate(${JSON.stringify(lines)}, beam_size=5, n_best=3, record_beams=True)
print(json.dumps([{"steps": [[[n.token_id, n.parent, n.log_prob, n.token_log_prob, n.status] for n in step]
                             for step in r.beams.steps], "hypotheses": r.beams.hypotheses} for r in results]))`]));
    assert.equal(ours.length, theirs.length);
    ours.forEach((record, i) => {
      assert.deepEqual(record.hypotheses, theirs[i].hypotheses, `${pair} ${i}: hypotheses`);
      const shape = (steps) => steps.map((step) => step.map(([token, parent, , , status]) => [token, parent, status]));
      assert.deepEqual(shape(record.steps.map((step) => step.map((n) => [n.tokenId, n.parent, n.logProb, n.tokenLogProb,
        n.status]))), shape(theirs[i].steps), `${pair} ${i}: tokens, parents and fates`);
      record.steps.forEach((step, t) => step.forEach((node, j) => {
        assert.ok(Math.abs(node.logProb - theirs[i].steps[t][j][2]) < 1e-4, `${pair} ${i} step ${t}: log_prob`);
        assert.ok(Math.abs(node.tokenLogProb - theirs[i].steps[t][j][3]) < 1e-4, `${pair} ${i} step ${t}: token_log_prob`);
      }));
    });
  }
});

test("a target prefix gives Python's translations", async () => {
  const translator = await Translator.load(BUNDLES["en-de"]);
  const lines = [...sentences("en-de", 3).slice(0, 3), ""];
  const prefixes = ["Zwei Frauen", null, ["▁Eine", "▁Gruppe"], "Ein"];
  for (const beamSize of [1, 5]) {
    const ours = (await translator.translate(lines, { beamSize, targetPrefix: prefixes })).map((r) => [r.text, r.tokenIds]);
    const theirs = JSON.parse(python(["-c", `import json; from serve import Translator
results = Translator(${JSON.stringify(BUNDLES["en-de"])}).translate(${JSON.stringify(lines)}, beam_size=${beamSize},
    target_prefix=${JSON.stringify(prefixes).replaceAll("null", "None")})
print(json.dumps([[r.text, r.token_ids] for r in results]))`]));
    assert.deepEqual(ours, theirs, `beam ${beamSize}`);
    assert.ok(ours[0][0].startsWith("Zwei Frauen"));
  }
  await assert.rejects(translator.translate(["A dog."], { targetPrefix: [["nosuchtoken"]] }),
    /targetPrefix\[0\]: "nosuchtoken" is not a subword token of this model/);
  await assert.rejects(translator.translate(["A dog."], { targetPrefix: [Array(40).fill("▁Ein")] }),
    /targetPrefix\[0\] has 40 tokens; the translation of this text has at most/);
  await assert.rejects(translator.translate(["A dog."], { targetPrefix: "Ein" }), /one entry/);
});

test("a missing or tampered bundle file is an error naming it", async () => {
  const copy = mkdtempSync(join(tmpdir(), "bundle-"));
  cpSync(BUNDLES["en-de"], copy, { recursive: true });
  const decoder = readFileSync(join(copy, "decoder_step.onnx"));
  decoder[decoder.length - 10] ^= 0xff;
  writeFileSync(join(copy, "decoder_step.onnx"), decoder);
  await assert.rejects(Translator.load(copy), (error) => error instanceof BundleError &&
    /decoder_step\.onnx does not match its sha256/.test(error.message));
  cpSync(join(BUNDLES["en-de"], "decoder_step.onnx"), join(copy, "decoder_step.onnx"));
  const weights = readFileSync(join(copy, "weights.bin"));  // the graphs' shared weights are checked too
  weights[weights.length >> 1] ^= 0xff;
  writeFileSync(join(copy, "weights.bin"), weights);
  await assert.rejects(Translator.load(copy), (error) => error instanceof BundleError &&
    /weights\.bin does not match its sha256/.test(error.message));
  cpSync(join(BUNDLES["en-de"], "weights.bin"), join(copy, "weights.bin"));
  spawnSync("rm", [join(copy, "tokenizer.json")]);
  await assert.rejects(Translator.load(copy), /tokenizer\.json is listed in the manifest but missing/);
  await assert.rejects(Translator.load(join(copy, "nowhere")), /not an exported bundle/);
  const manifest = JSON.parse(readFileSync(join(copy, "manifest.json"), "utf8"));
  writeFileSync(join(copy, "manifest.json"), JSON.stringify({ ...manifest, format_version: 1 }));
  await assert.rejects(Translator.load(copy), /format_version 1; this version reads 5/);
  cpSync(join(BUNDLES["en-de"], "tokenizer.json"), join(copy, "tokenizer.json"));
  const { search, ...withoutRule } = manifest;
  assert.deepEqual(search, { max_length_a: 1.5, max_length_b: 10 });  // Python's rule, read from the manifest
  writeFileSync(join(copy, "manifest.json"), JSON.stringify(withoutRule));
  await assert.rejects(Translator.load(copy), /no search length rule/);
});

test("the output length rule comes from the manifest", async () => {
  const copy = mkdtempSync(join(tmpdir(), "bundle-"));
  cpSync(BUNDLES["en-de"], copy, { recursive: true });
  const manifest = JSON.parse(readFileSync(join(copy, "manifest.json"), "utf8"));
  writeFileSync(join(copy, "manifest.json"), JSON.stringify({ ...manifest, search: { max_length_a: 0, max_length_b: 2 } }));
  const [result] = await (await Translator.load(copy)).translate(["Two young children are playing on the grass."]);
  assert.ok(result.tokenIds.length <= 2 && !result.hypotheses[0].finished, JSON.stringify(result.tokenIds));
});

test("the CLI: one line in, one line out, empty lines kept, errors in one line", () => {
  const lines = ["Two men are playing chess in a park.", "", "A dog runs."];
  const cli = join(HERE, "..", "cli.mjs");
  const done = spawnSync(process.execPath, [cli, "--model", BUNDLES["en-de"], "--beam", "5"],
    { input: `${lines.join("\n")}\n`, encoding: "utf8" });
  assert.equal(done.status, 0, done.stderr);
  assert.deepEqual(done.stdout.split("\n").slice(0, -1), pythonTranslate("en-de", lines, 5));
  const missing = spawnSync(process.execPath, [cli, "--model", join(ROOT, "nowhere")], { input: "A dog.\n", encoding: "utf8" });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^error: no manifest\.json in .*nowhere: not an exported bundle\n$/);
  const badBeam = spawnSync(process.execPath, [cli, "--model", BUNDLES["en-de"], "--beam", "zero"], { input: "", encoding: "utf8" });
  assert.equal(badBeam.status, 1);
  assert.equal(badBeam.stderr, "error: beamSize must be an integer between 1 and 16, got NaN\n");
});

test("percentile is Python's definition", async () => {
  const { percentile } = await import("../percentile.mjs");
  const values = [12.5, 3, 7.25, 30, 1, 9, 9, 4.5];
  const qs = [0, 10, 50, 90, 95, 99, 100];
  const expected = JSON.parse(python(["-c", "import json, sys; from serve.loadtest import percentile; "
    + `print(json.dumps([percentile(${JSON.stringify(values)}, q) for q in ${JSON.stringify(qs)}]))`]));
  assert.deepEqual(qs.map((q) => percentile(values, q)), expected);
  assert.ok(Number.isNaN(percentile([], 50)));
});
