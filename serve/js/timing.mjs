// node serve/js/timing.mjs BUNDLE SENTENCES_FILE [COUNT] [BEAM]: batch-1 latency in Node, one sentence at a time.
import { readFileSync } from "node:fs";
import { percentile } from "./percentile.mjs";
import { Translator } from "./translator.mjs";

const [bundle, file, count = "100", beam = "5"] = process.argv.slice(2);
const lines = readFileSync(file, "utf8").split("\n").filter(Boolean).slice(0, Number(count));
const translator = await Translator.load(bundle);
await translator.translate(lines.slice(0, 5), { beamSize: Number(beam) }); // warm-up
const times = [];
for (const line of lines) {
  const started = performance.now();
  await translator.translate([line], { beamSize: Number(beam) });
  times.push(performance.now() - started);
}
const at = (q) => Number(percentile(times, q).toFixed(1));
console.log(JSON.stringify({ sentences: times.length, beam: Number(beam), p50_ms: at(50), p95_ms: at(95) }));
