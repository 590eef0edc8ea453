// Transformers.js translates with a folder written by `python -m export.hf --onnx`, local files only.
//
//   node translate.mjs MODEL_FOLDER < sentences.json > results.json
//
// stdin: a JSON list of sentences; stdout: a JSON list of {ids, text}, one greedy search per sentence (batched calls
// can append text after EOS), each stopped at 1.5 n + 10 new tokens for n source tokens, as the project's search.
import path from "node:path";
import { readFileSync } from "node:fs";
import { AutoModelForSeq2SeqLM, AutoTokenizer, env } from "@huggingface/transformers";

const folder = path.resolve(process.argv[2]);
env.allowRemoteModels = false; // never the Hub: the folder below or an error
env.localModelPath = path.dirname(folder);
const name = path.basename(folder);
const tokenizer = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForSeq2SeqLM.from_pretrained(name, { dtype: "fp32", device: "cpu" });
const sentences = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const sentence of sentences) {
  const inputs = await tokenizer(sentence);
  const sourceLength = inputs.input_ids.dims[1]; // [1, n]: the source tokens and its </s>
  const output = await model.generate({ ...inputs, max_new_tokens: Math.floor(1.5 * sourceLength + 10), do_sample: false, num_beams: 1 });
  const ids = Array.from(output.data, Number).slice(1); // [1, 1 + T]: drop the decoder start token
  const end = ids.indexOf(model.config.eos_token_id);
  const tokens = end >= 0 ? ids.slice(0, end) : ids;
  results.push({ ids: tokens, text: tokenizer.decode(tokens, { skip_special_tokens: true }) });
}
process.stdout.write(JSON.stringify(results) + "\n");
