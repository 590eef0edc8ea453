// Transformers.js translates with a folder written by `python -m export.hf --onnx`, local files only.
//
//   node translate.mjs MODEL_FOLDER < sources.json > results.json
//
// stdin: a JSON list of [sentence, max_new_tokens] (the project's per-source limit); stdout: a JSON list of
// {ids, text}, one greedy search per sentence (batched calls can append text after EOS; there is no beam search).
import path from "node:path";
import { readFileSync } from "node:fs";
import { AutoModelForSeq2SeqLM, AutoTokenizer, env } from "@huggingface/transformers";

const folder = path.resolve(process.argv[2]);
env.allowRemoteModels = false; // never the Hub: the folder below or an error
env.localModelPath = path.dirname(folder);
const name = path.basename(folder);
const tokenizer = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForSeq2SeqLM.from_pretrained(name, { dtype: "fp32", device: "cpu" });
const eos = model.config.eos_token_id;
const results = [];
for (const [sentence, limit] of JSON.parse(readFileSync(0, "utf8"))) {
  const inputs = await tokenizer(sentence);
  const output = await model.generate({ ...inputs, max_new_tokens: limit, do_sample: false, num_beams: 1 });
  const ids = Array.from(output.data, Number).slice(1); // [1, 1 + T]: drop the decoder start token
  const tokens = ids.includes(eos) ? ids.slice(0, ids.indexOf(eos)) : ids;
  results.push({ ids: tokens, text: tokenizer.decode(tokens, { skip_special_tokens: true }) });
}
process.stdout.write(JSON.stringify(results) + "\n");
