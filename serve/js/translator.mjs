// Translate with an attention-mt ONNX bundle in Node (onnxruntime-node) or the browser (onnxruntime-web).
//
//   const translator = await Translator.load("models/en-de/onnx");            // Node: a folder
//   const translator = await Translator.load(new URL("bundle/", location), { ort });  // browser: URLs
//   const [result] = await translator.translate(["Two dogs play."], { beamSize: 5 });
//
// The same search as Python's core/search.py (greedy and beam, length penalty, the manifest's length rule,
// finished sentences dropped), on the bundle's graphs; the manifest is the contract (format version, file list,
// sha256 of every file read). The graphs' weights are ONNX external data in weights.bin, read (downloaded) once and
// given to every graph that points into it.

import { Tokenizer } from "@huggingface/tokenizers";

export const BUNDLE_FORMAT = "attention-mt-onnx";
export const BUNDLE_FORMAT_VERSION = 5;
const GRAPHS = ["encoder", "decoder_step", "teacher_forced"];

export class BundleError extends Error {}

function isUrl(bundle) {
  return bundle instanceof URL || /^(https?|file|blob):/.test(String(bundle));
}

/** A fetch response's body as bytes; onBytes(loaded) hears the count as the chunks arrive. */
export async function responseBytes(response, onBytes = null) {
  if (!onBytes || !response.body) return new Uint8Array(await response.arrayBuffer());
  const chunks = [];
  let loaded = 0;
  for (const reader = response.body.getReader(); ;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onBytes(loaded);
  }
  const bytes = new Uint8Array(loaded);
  chunks.reduce((offset, chunk) => { bytes.set(chunk, offset); return offset + chunk.length; }, 0);
  return bytes;
}

async function readBytes(bundle, name, onBytes = null, fetchUrl = globalThis.fetch) {
  if (isUrl(bundle)) {
    const base = String(bundle).endsWith("/") ? String(bundle) : `${bundle}/`;
    const response = await fetchUrl(new URL(name, base));
    if (!response.ok) throw new BundleError(`${name} is listed in the manifest but missing (${response.status})`);
    return responseBytes(response, onBytes);
  }
  const { readFile } = await import("node:fs/promises");
  const { join } = await import("node:path");
  try {
    return new Uint8Array(await readFile(join(String(bundle), name)));
  } catch (error) {
    if (error.code === "ENOENT") {
      throw new BundleError(`${join(String(bundle), name)} is listed in the manifest but missing`);
    }
    throw error;
  }
}

/** The sha256 of bytes as hex (Web Crypto: Node and browsers), as the manifest writes it. */
export async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// The normalizer and pre-tokenizer that core/tokenizer.py writes into every tokenizer.json. This module runs them
// itself, as the Rust library behind Python does: \s and stripping mean Unicode White_Space (JavaScript's \s and
// trim() also take U+FEFF, a BOM), punctuation is isolated one character at a time and an <unk> run never crosses
// a pre-token. @huggingface/tokenizers only runs the BPE model, one pre-token at a time.
const NORMALIZER = { type: "Sequence", normalizers: [{ type: "NFC" },
  { type: "Replace", pattern: { Regex: "\\s+" }, content: " " }, { type: "Strip", strip_left: true, strip_right: true }] };
const PRE_TOKENIZER = { type: "Sequence", pretokenizers: [
  { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: true }, { type: "Punctuation", behavior: "Isolated" }] };
const PUNCTUATION = /([\p{P}!-/:-@[-`{-~])/u; // Rust's is_ascii_punctuation or a Unicode P* category

/** A tokenizer.json read as it is: never a hub download, no tokenizer_config.json needed. */
export class BundleTokenizer {
  constructor(tokenizerJson) {
    for (const [part, expected] of [["normalizer", NORMALIZER], ["pre_tokenizer", PRE_TOKENIZER]]) {
      if (JSON.stringify(tokenizerJson[part]) !== JSON.stringify(expected)) {
        throw new BundleError(`tokenizer.json has a ${part} this version does not read: ${JSON.stringify(tokenizerJson[part])}`);
      }
    }
    this.tokenizer = new Tokenizer({ ...tokenizerJson, normalizer: null, pre_tokenizer: null }, {});
    this.vocab = this.tokenizer.model.tokens_to_ids;
    this.unkId = this.vocab.get("<unk>");
  }

  /** Python's Tokenizer.normalize: NFC, every run of White_Space one space, none at either end. */
  normalize(text) {
    return text.normalize("NFC").replace(/\p{White_Space}+/gu, " ").replace(/^ | $/g, "");
  }

  encode(text) {
    const normalized = this.normalize(text);
    if (!normalized) return [];
    const marked = normalized.replaceAll(" ", "\u2581");
    const words = (marked.startsWith("\u2581") ? marked : `\u2581${marked}`).split(/(?=\u2581)/u)
      .flatMap((word) => word.split(PUNCTUATION).filter(Boolean));
    return words.flatMap((word) => this.tokenizer.model([word])).map((token) => this.vocab.get(token) ?? this.unkId);
  }

  /** Python's Tokenizer.check_compatible: the config's vocabulary size and special ids are this file's. */
  checkCompatible(config) {
    if (this.vocab.size !== config.vocab_size) {
      throw new BundleError(`tokenizer has ${this.vocab.size} tokens but the model expects ${config.vocab_size}`);
    }
    const ids = [config.pad_id, config.bos_id, config.eos_id, config.unk_id];
    if (ids.some((id, i) => id !== i)) {
      throw new BundleError(`model special ids (${ids.join(", ")}) differ from the tokenizer's (<pad>, <s>, </s>, <unk>)`);
    }
  }

  tokens(ids) {
    return ids.map((id) => this.tokenizer.model.vocab[id]);
  }

  /** How many characters the model cannot read, as Python's encode_with_unknown: code points of the normalized text
   * that the vocabulary lacks (each becomes part of an <unk>), so 0 exactly when no <unk> is in the ids. */
  unknownCharacters(text) {
    let count = 0;
    for (const character of this.normalize(text)) {
      if (character !== " " && !this.vocab.has(character)) count += 1;
    }
    return count;
  }

  /** Specials vanish (the file's decoder), a dropped <unk> leaves no double space, as in Python's decode. */
  decode(ids) {
    if (ids.length === 0) return "";
    const text = this.tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    return text.replace(/ {2,}/g, " ").trim();
  }
}

const isCount = (value, most = Number.MAX_SAFE_INTEGER) => Number.isSafeInteger(value) && value >= 1 && value <= most;

/** Python's option checks and messages (core/translator.py), with this module's option names: before any work. */
function checkOptions({ beamSize, lengthPenalty, maxLength, nBest, batchSize }, maxBeam) {
  if (!isCount(beamSize, maxBeam)) throw new RangeError(`beamSize must be an integer between 1 and ${maxBeam}, got ${beamSize}`);
  if (!(typeof lengthPenalty === "number" && Number.isFinite(lengthPenalty) && lengthPenalty >= 0)) {
    throw new RangeError(`lengthPenalty must be a finite number >= 0, got ${lengthPenalty}`);
  }
  if (maxLength !== null && !isCount(maxLength)) throw new RangeError(`maxLength must be an integer >= 1, got ${maxLength}`);
  if (!isCount(nBest, beamSize)) throw new RangeError(`nBest must be an integer between 1 and beamSize (${beamSize}), got ${nBest}`);
  if (!isCount(batchSize)) throw new RangeError(`batchSize must be an integer >= 1, got ${batchSize}`);
}

// core/config.py's TransformerConfig: each field's type and default, then its checks, in its order and words.
const CONFIG_FIELDS = { vocab_size: ["int"], d_model: ["int", 512], n_heads: ["int", 8], d_ff: ["int", 2048],
  n_encoder_layers: ["int", 6], n_decoder_layers: ["int", 6], dropout: ["float", 0.1], attention_dropout: ["float", 0],
  activation_dropout: ["float", 0], pre_norm: ["bool", false], max_positions: ["int", 1024], pad_id: ["int", 0],
  bos_id: ["int", 1], eos_id: ["int", 2], unk_id: ["int", 3], activation: ["str", "relu"],
  final_logits_bias: ["bool", false] };
const ACTIVATIONS = ["relu", "swish"];
const IS_TYPE = { int: Number.isInteger, float: (v) => typeof v === "number", bool: (v) => typeof v === "boolean",
  str: (v) => typeof v === "string" };

/** The config with its defaults filled in, or an Error with TransformerConfig's message for what it refuses. */
export function checkConfig(values) {
  if (values === null || typeof values !== "object" || Array.isArray(values)) throw new Error("must hold a JSON object");
  const unknown = Object.keys(values).filter((name) => !(name in CONFIG_FIELDS)).sort();
  if (unknown.length) throw new Error(`unknown config keys: ${unknown.join(", ")}`);
  const config = {};
  for (const [name, [type, fallback]] of Object.entries(CONFIG_FIELDS)) {
    const value = name in values ? values[name] : fallback;
    if (value === undefined) throw new Error(`missing ${name}`);
    if (!IS_TYPE[type](value)) throw new Error(`${name} must be ${type}, got ${JSON.stringify(value)}`);
    config[name] = value;
  }
  for (const name of ["vocab_size", "d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", "max_positions"]) {
    if (config[name] < 1) throw new Error(`${name} must be positive, got ${config[name]}`);
  }
  if (config.d_model % config.n_heads) throw new Error(`d_model (${config.d_model}) must be divisible by n_heads (${config.n_heads})`);
  if (config.d_model % 2) throw new Error(`d_model (${config.d_model}) must be even for the sinusoidal encoding`);
  for (const name of ["dropout", "attention_dropout", "activation_dropout"]) {
    if (!(config[name] >= 0 && config[name] < 1)) throw new Error(`${name} must be in [0, 1), got ${config[name]}`);
  }
  if (!ACTIVATIONS.includes(config.activation)) {
    throw new Error(`activation must be one of ${ACTIVATIONS.join(", ")}, got '${config.activation}'`);
  }
  return config;
}

function lengthNormalized(logProb, length, lengthPenalty) {
  return logProb / Math.max(length, 1) ** lengthPenalty;
}

/**
 * Beam search for sentences whose encoded state is `state`; a port of core/search.py's beam_search.
 * backend: { config, step(lastTokens, state, k) -> {logProbs, ids, state}, reorder(state, index) -> state }.
 * Returns, per sentence, its nBest hypotheses {tokenIds, logProb, score, finished}, best first. When `records` is an
 * array, one record per sentence is pushed to it, as Python's BeamRecord: {steps, hypotheses}, steps[t] the
 * candidates ranked at step t, best first, {tokenId, parent, logProb, tokenLogProb, status}; hypotheses[i] the
 * [step, index] of the node that ended the i-th returned hypothesis. `forced` gives each sentence a target prefix as
 * [token, logProb] pairs: its first steps take them, one beam (Python's `forced`).
 */
export async function beamSearch(backend, state, maxLengths, { beamSize = 5, lengthPenalty = 1.0, nBest = 1,
  records = null, forced = null } = {}) {
  const { vocab_size: vocabSize, eos_id: eosId, bos_id: bosId } = backend.config;
  const finished = maxLengths.map(() => []);
  const steps = maxLengths.map(() => []); // filled only when records is an array
  const ends = maxLengths.map(() => []); // [step, node] of each finished hypothesis
  let active = maxLengths.map((_, i) => i);
  let group = 1; // state rows per sentence: one until the first step has chosen beamSize beams
  let scores = active.map(() => [0]);
  let history = active.map(() => []);
  let lastTokens = active.map(() => bosId);
  const k = Math.min(2 * beamSize, vocabSize);
  const longest = Math.max(0, ...maxLengths);

  for (let step = 0; step < longest; step++) {
    const out = await backend.step(lastTokens, state, k);
    state = out.state;
    const keepRows = [], nextScores = [], nextTokens = [], stillActive = [];
    active.forEach((sentence, row) => {
      const candidates = [];
      const prefix = forced?.[sentence] ?? [];
      for (let beam = 0; beam < group && step >= prefix.length; beam++) {
        for (let j = 0; j < k; j++) {
          const r = row * group + beam;
          const token = out.ids[r * k + j];
          const logProb = out.logProbs[r * k + j];
          candidates.push({ total: scores[row][beam] + logProb, flat: beam * vocabSize + token, logProb });
        }
      }
      // Best first; equal scores by beam, then token id, as a search over all [group, V] would order them.
      candidates.sort((a, b) => (b.total - a.total) || (a.flat - b.flat));
      const beams = [], nodes = [], opened = []; // opened: the node of each beam
      if (step < prefix.length) { // a prefix token: the one beam (beam 0) takes it
        const [token, logProb] = prefix[step];
        const total = scores[row][0] + logProb;
        beams.push([row * group, token, total]);
        opened.push(0);
        nodes.push({ tokenId: token, parent: step ? 0 : -1, logProb: total, tokenLogProb: logProb, status: "kept" });
      }
      for (let rank = 0; rank < Math.min(2 * beamSize, candidates.length); rank++) {
        const { total, flat, logProb } = candidates[rank];
        if (total === -Infinity) break;
        const beam = Math.floor(flat / vocabSize), token = flat % vocabSize;
        const sourceRow = row * group + beam;
        let status = "pruned";
        if (token === eosId) {
          if (rank < beamSize) {
            const tokens = history[sourceRow];
            finished[sentence].push({ tokenIds: tokens, logProb: total,
              score: lengthNormalized(total, tokens.length + 1, lengthPenalty), finished: true });
            ends[sentence].push([step, nodes.length]);
            status = "finished";
          }
        } else if (beams.length < beamSize) {
          beams.push([sourceRow, token, total]);
          opened.push(nodes.length);
          status = "kept";
        }
        if (records) nodes.push({ tokenId: token, parent: step ? beam : -1, logProb: total, tokenLogProb: logProb, status });
      }
      const atMaxLength = step + 1 >= maxLengths[sentence];
      if (atMaxLength) {
        beams.forEach(([sourceRow, token, total], b) => {
          const tokens = [...history[sourceRow], token];
          finished[sentence].push({ tokenIds: tokens, logProb: total,
            score: lengthNormalized(total, tokens.length, lengthPenalty), finished: false });
          ends[sentence].push([step, opened[b]]);
        });
      }
      const done = finished[sentence].length >= beamSize || atMaxLength || beams.length === 0;
      if (records) {
        if (done) for (const node of opened) nodes[node].status = atMaxLength ? "stopped" : "pruned";
        steps[sentence].push(nodes);
      }
      if (done) return;
      while (beams.length < beamSize) beams.push([beams[0][0], beams[0][1], -Infinity]);
      stillActive.push(sentence);
      for (const [sourceRow, token, total] of beams) {
        keepRows.push(sourceRow);
        nextTokens.push(token);
        nextScores.push(total);
      }
    });
    if (stillActive.length === 0) break;
    state = backend.reorder(state, keepRows); // the visible beam reordering (after step 0 it grows the beams)
    group = beamSize;
    lastTokens = nextTokens;
    history = keepRows.map((sourceRow, i) => [...history[sourceRow], nextTokens[i]]);
    scores = stillActive.map((_, s) => nextScores.slice(s * group, (s + 1) * group));
    active = stillActive;
  }
  // Best first (a stable sort, as Python's sorted), the n best of each sentence.
  const bestFirst = finished.map((found) => found.map((_, i) => i).sort((a, b) => found[b].score - found[a].score)
    .slice(0, nBest));
  if (records) bestFirst.forEach((order, s) => records.push({ steps: steps[s], hypotheses: order.map((i) => ends[s][i]) }));
  return finished.map((found, s) => bestFirst[s].map((i) => found[i]));
}

/** Rows of a [rows, ...rest] float32 array, selected by index into a new array. */
function takeRows(data, rowSize, index) {
  const out = new Float32Array(index.length * rowSize);
  index.forEach((from, to) => out.set(data.subarray(from * rowSize, (from + 1) * rowSize), to * rowSize));
  return out;
}

/** The bundle's graphs under onnxruntime (node or web) as a search backend. */
class OnnxBackend {
  constructor(ort, sessions, config, topK) {
    this.ort = ort;
    this.sessions = sessions;
    this.config = config;
    this.topK = topK;
    this.dHead = config.d_model / config.n_heads;
  }

  padBatch(sequences, padId) {
    const width = Math.max(...sequences.map((s) => s.length));
    const data = new BigInt64Array(sequences.length * width).fill(BigInt(padId));
    sequences.forEach((s, row) => s.forEach((id, j) => { data[row * width + j] = BigInt(id); }));
    return { data, width };
  }

  /** A head mask [rows, layers, heads] for the graphs' {kind}_head_mask inputs: `off` (a [layers, heads] array of
   * 1 and 0, see headMasks) repeated per row, or every head on (ones) when it is null. */
  headMask(rows, layers, off = null) {
    const H = this.config.n_heads;
    const data = new Float32Array(rows * layers * H).fill(1);
    if (off) for (let row = 0; row < rows; row++) data.set(off, row * layers * H);
    return new this.ort.Tensor("float32", data, [rows, layers, H]);
  }

  async encode(sources, masks = null) {
    const { data, width } = this.padBatch(sources, this.config.pad_id);
    const outputs = await this.sessions.encoder.run({
      source_ids: new this.ort.Tensor("int64", data, [sources.length, width]),
      encoder_head_mask: this.headMask(sources.length, this.config.n_encoder_layers, masks?.encoder) });
    return { outputs, width };
  }

  async start(sources, masks = null) {
    const { outputs, width } = await this.encode(sources, masks);
    const B = sources.length, L = this.config.n_decoder_layers, H = this.config.n_heads;
    const layerSize = B * H * width * this.dHead; // cross_keys is [L, B, H, S, d_head]
    const split = (tensor) => Array.from({ length: L }, (_, l) => tensor.data.slice(l * layerSize, (l + 1) * layerSize));
    const mask = new Uint8Array(B * width);
    sources.forEach((s, row) => mask.fill(1, row * width, row * width + s.length));
    const empty = Array.from({ length: L }, () => new Float32Array(0));
    return { rows: B, sourceLength: width, pastLength: 0, sentences: sources.map((_, i) => i), mask, masks,
      selfKeys: empty, selfValues: empty, crossKeys: split(outputs.cross_keys), crossValues: split(outputs.cross_values) };
  }

  async step(lastTokens, state, k) {
    if (k > this.topK) {
      throw new RangeError(`this bundle's step graph returns at most ${this.topK} tokens per row; beamSize must be at most ${this.topK / 2}`);
    }
    const { Tensor } = this.ort;
    const N = state.rows, H = this.config.n_heads, D = this.dHead, S = state.sourceLength, P = state.pastLength;
    const feeds = {
      target_ids: new Tensor("int64", BigInt64Array.from(lastTokens, BigInt), [N, 1]),
      source_mask: new Tensor("bool", state.mask, [N, S]),
      decoder_head_mask: this.headMask(N, this.config.n_decoder_layers, state.masks?.decoder),
      cross_head_mask: this.headMask(N, this.config.n_decoder_layers, state.masks?.cross),
      top_k: new Tensor("int64", BigInt64Array.from([BigInt(k)]), []),
    };
    for (let l = 0; l < this.config.n_decoder_layers; l++) {
      feeds[`past_key_${l}`] = new Tensor("float32", state.selfKeys[l], [N, H, P, D]);
      feeds[`past_value_${l}`] = new Tensor("float32", state.selfValues[l], [N, H, P, D]);
      feeds[`cross_key_${l}`] = new Tensor("float32", state.crossKeys[l], [N, H, S, D]);
      feeds[`cross_value_${l}`] = new Tensor("float32", state.crossValues[l], [N, H, S, D]);
    }
    const out = await this.sessions.decoder_step.run(feeds);  // top_log_probs, top_ids: [N, k]
    const logProbs = Float32Array.from(out.top_log_probs.data), ids = Array.from(out.top_ids.data, Number);
    const layers = [...Array(this.config.n_decoder_layers).keys()];
    return { logProbs, ids, state: { ...state, pastLength: P + 1,
      selfKeys: layers.map((l) => out[`present_key_${l}`].data),
      selfValues: layers.map((l) => out[`present_value_${l}`].data) } };
  }

  reorder(state, index) {
    const H = this.config.n_heads, D = this.dHead, S = state.sourceLength;
    const selfRow = H * state.pastLength * D, crossRow = H * S * D;
    const sentences = index.map((i) => state.sentences[i]);
    const sameSources = sentences.length === state.sentences.length && sentences.every((s, i) => s === state.sentences[i]);
    const next = { ...state, rows: index.length, sentences,
      selfKeys: state.selfKeys.map((a) => takeRows(a, selfRow, index)),
      selfValues: state.selfValues.map((a) => takeRows(a, selfRow, index)) };
    if (sameSources) return next; // beams moved within their sentences: the same cross rows
    const mask = new Uint8Array(index.length * S);
    index.forEach((from, to) => mask.set(state.mask.subarray(from * S, (from + 1) * S), to * S));
    return { ...next, mask, crossKeys: state.crossKeys.map((a) => takeRows(a, crossRow, index)),
      crossValues: state.crossValues.map((a) => takeRows(a, crossRow, index)) };
  }

  /** One pass of the teacher-forced graph over padded sources and decoder inputs: its outputs, S and T. */
  async teacherForced(sources, decoderInputs, masks = null) {
    const { Tensor } = this.ort;
    const source = this.padBatch(sources, this.config.pad_id);
    const target = this.padBatch(decoderInputs, this.config.pad_id);
    const B = sources.length, { n_encoder_layers: encoderLayers, n_decoder_layers: decoderLayers } = this.config;
    const out = await this.sessions.teacher_forced.run({
      source_ids: new Tensor("int64", source.data, [B, source.width]),
      target_ids: new Tensor("int64", target.data, [B, target.width]),
      encoder_head_mask: this.headMask(B, encoderLayers, masks?.encoder),
      decoder_head_mask: this.headMask(B, decoderLayers, masks?.decoder),
      cross_head_mask: this.headMask(B, decoderLayers, masks?.cross) });
    return { out, width: source.width, T: target.width };
  }

  /** Each prefix token's log-probability after the tokens before it (Python's forced_tokens): [[token, logProb]]. */
  async forcedTokens(sources, prefixes, masks = null) {
    const rows = prefixes.flatMap((prefix, row) => (prefix.length ? [row] : []));
    const forced = prefixes.map(() => []);
    if (!rows.length) return forced;
    const { bos_id: bos, vocab_size: V } = this.config;
    const { out, T } = await this.teacherForced(rows.map((row) => sources[row]),
      rows.map((row) => [bos, ...prefixes[row].slice(0, -1)]), masks);
    const logits = out.logits.data; // [R, T, V]
    rows.forEach((row, r) => {
      forced[row] = prefixes[row].map((token, t) => {
        const scores = logits.subarray((r * T + t) * V, (r * T + t + 1) * V);
        let most = -Infinity, sum = 0;
        for (const value of scores) most = Math.max(most, value);
        for (const value of scores) sum += Math.exp(value - most);
        return [token, scores[token] - most - Math.log(sum)];
      });
    });
    return forced;
  }

  /** Teacher-forced cross-attention of the chosen tokens: [layers][heads][T][S] per sentence. */
  async crossAttention(sources, decoderInputs, masks = null) {
    const { out, width, T } = await this.teacherForced(sources, decoderInputs, masks);
    const B = sources.length, L = this.config.n_decoder_layers, H = this.config.n_heads;
    const weights = out.cross_attentions.data; // [L, B, H, T, S]
    return sources.map((source, b) => Array.from({ length: L }, (_, l) => Array.from({ length: H }, (_, h) =>
      Array.from({ length: decoderInputs[b].length }, (_, t) => {
        const offset = (((l * B + b) * H + h) * T + t) * width;
        return Array.from(weights.subarray(offset, offset + source.length));
      }))));
  }

  /** Teacher-forced attention of every kind for one source and its decoder inputs (Python's attention_of):
   * {encoder [layers][heads][S][S], decoder [layers][heads][T][T], cross [layers][heads][T][S]}. */
  async attend(source, decoderInputs, masks = null) {
    const { out } = await this.teacherForced([source], [decoderInputs], masks);
    const S = source.length, T = decoderInputs.length, H = this.config.n_heads;
    const matrices = (tensor, layers, rows, columns) => Array.from({ length: layers }, (_, l) =>
      Array.from({ length: H }, (_, h) => Array.from({ length: rows }, (_, r) => { // tensor is [L, 1, H, rows, columns]
        const offset = ((l * H + h) * rows + r) * columns;
        return Array.from(tensor.data.subarray(offset, offset + columns));
      })));
    return { encoder: matrices(out.encoder_attentions, this.config.n_encoder_layers, S, S),
      decoder: matrices(out.decoder_attentions, this.config.n_decoder_layers, T, T),
      cross: matrices(out.cross_attentions, this.config.n_decoder_layers, T, S) };
  }
}

export const HEAD_KINDS = ["encoder", "decoder", "cross"];

/**
 * Python's HeadMask.switched_off (core/heads.py): the heads `headsOff` names ([kind, layer, head] triples or
 * "kind.layer.head" strings, counted from 0) switched off, as {encoder, decoder, cross} Float32Arrays
 * [layers * heads] of 1 and 0; null when the list is empty. A wrong entry is a RangeError with Python's message.
 */
export function headMasks(config, headsOff) {
  if (headsOff === null || headsOff === undefined) return null;
  if (!Array.isArray(headsOff)) throw new RangeError("heads_off must be a list of (kind, layer, head) entries");
  if (headsOff.length === 0) return null;
  const H = config.n_heads;
  const layers = { encoder: config.n_encoder_layers, decoder: config.n_decoder_layers, cross: config.n_decoder_layers };
  const masks = Object.fromEntries(HEAD_KINDS.map((kind) => [kind, new Float32Array(layers[kind] * H).fill(1)]));
  for (const entry of headsOff) {
    let parts = typeof entry === "string" ? entry.split(".") : entry;
    if (!Array.isArray(parts) || parts.length !== 3) {
      throw new RangeError(`a head is (kind, layer, head) or 'kind.layer.head', got ${JSON.stringify(entry)}`);
    }
    if (typeof entry === "string") parts = parts.map((part) => (/^[0-9]+$/.test(part) ? Number(part) : part));
    const [kind, layer, head] = parts;
    if (!HEAD_KINDS.includes(kind)) throw new RangeError(`head kind must be one of ${HEAD_KINDS.join(", ")}, got ${JSON.stringify(kind)}`);
    for (const [name, value, count] of [["layer", layer, layers[kind]], ["head", head, H]]) {
      if (!Number.isInteger(value) || value < 0 || value >= count) {
        throw new RangeError(`${kind} ${name} must be an integer from 0 to ${count - 1}, got ${JSON.stringify(value)}`);
      }
    }
    masks[kind][layer * H + head] = 0;
  }
  return masks;
}

export class Translator {
  /** Each text's target prefix as token ids (Python's prefix_ids): null when no text has one. */
  prefixIds(texts, targetPrefix) {
    if (targetPrefix === null || targetPrefix === undefined) return null;
    if (!Array.isArray(targetPrefix) || targetPrefix.length !== texts.length) {
      throw new RangeError(`targetPrefix must be an array with one entry (null, a text or an array of tokens) per text, ${texts.length} here`);
    }
    const { pad_id: pad, bos_id: bos, eos_id: eos } = this.config;
    const resolved = targetPrefix.map((prefix, i) => {
      if (prefix === null || typeof prefix === "string") return prefix ? this.tokenizer.encode(prefix) : [];
      return prefix.map((token) => {
        const id = typeof token === "string" ? this.tokenizer.vocab.get(token) : undefined;
        if (id === undefined || [pad, bos, eos].includes(id)) {
          throw new RangeError(`targetPrefix[${i}]: ${JSON.stringify(token)} is not a subword token of this model`);
        }
        return id;
      });
    });
    return resolved.some((ids) => ids.length) ? resolved : null;
  }

  /**
   * Load a bundle: a folder (Node) or a URL (browser and Node). Checks the manifest's format and version and the
   * sha256 of every file it reads, and names the file that is missing or changed. `ort` is onnxruntime-node or
   * onnxruntime-web (Node imports onnxruntime-node when it is not given); `threads` sets intra-op threads;
   * `precision: "int8"` searches with the bundle's int8 encoder and step graphs (Python's precision); `onProgress`
   * is called with [{name, bytes, loaded}] for every file read, before the first byte and as the bytes arrive;
   * `fetch` reads a URL (default globalThis.fetch; a page may pass one that keeps files in its Cache Storage).
   */
  static async load(bundle, { ort, threads = 1, precision = "float32", onProgress = null, fetch = globalThis.fetch } = {}) {
    ort = ort ?? await import("onnxruntime-node");
    let manifest;
    try {
      manifest = JSON.parse(new TextDecoder().decode(await readBytes(bundle, "manifest.json", null, fetch)));
    } catch (error) {
      if (error instanceof BundleError) throw new BundleError(`no manifest.json in ${bundle}: not an exported bundle`);
      throw new BundleError(`${bundle}/manifest.json is not valid JSON: ${error.message}`);
    }
    if (manifest.format !== BUNDLE_FORMAT) throw new BundleError(`${bundle}/manifest.json is not an ${BUNDLE_FORMAT} manifest`);
    if (manifest.format_version !== BUNDLE_FORMAT_VERSION) {
      throw new BundleError(`${bundle} has format_version ${manifest.format_version}; this version reads ${BUNDLE_FORMAT_VERSION}`);
    }
    // the search rules, read before any file is downloaded
    const rule = manifest.search ?? {};
    if (![rule.max_length_a, rule.max_length_b].every((value) => typeof value === "number" && Number.isFinite(value))) {
      throw new BundleError(`${bundle}/manifest.json has no search length rule (search.max_length_a/b): export the model again`);
    }
    // core/search.py's SearchRules beyond the length rule (an imported Marian model's): not in this module yet, so
    // refused here rather than searched differently from Python
    const defaults = { banned_ids: [], forced_eos: false, early_stopping: true, float32_scores: false };
    const other = Object.keys(rule).filter((name) => !["max_length_a", "max_length_b"].includes(name) &&
      JSON.stringify(rule[name]) !== JSON.stringify(defaults[name]));
    if (other.length) {
      throw new BundleError(`${bundle}/manifest.json asks for search rules this version does not implement: ${other.join(", ")}`);
    }
    if (!["float32", "int8"].includes(precision)) throw new RangeError(`precision must be "float32" or "int8", got ${JSON.stringify(precision)}`);
    // The step graphs of the chosen precision (Python's graph_key); teacher_forced is float32 in every bundle.
    const graphKeys = Object.fromEntries(GRAPHS.map((g) => [g, precision === "int8" && g !== "teacher_forced" ? `${g}_int8` : g]));
    for (const key of Object.values(graphKeys)) {
      if (!manifest.graphs?.[key]) throw new BundleError(`${bundle} has no ${key} graph: export it with int8 graphs or use float32`);
    }
    const weights = new Set(Object.values(graphKeys).flatMap((key) => manifest.graphs[key].weights));  // each file read once
    const names = [...Object.values(graphKeys).map((key) => manifest.graphs[key].file), ...weights, manifest.tokenizer, "config.json"];
    // onProgress([{name, bytes, loaded}]): every file this load reads, before the first byte and as bytes arrive.
    const progress = names.map((name) => ({ name, bytes: manifest.files?.[name]?.bytes ?? null, loaded: 0 }));
    onProgress?.(progress.map((file) => ({ ...file })));
    const files = {};
    for (const [i, name] of names.entries()) {
      const bytes = await readBytes(bundle, name, onProgress && ((loaded) => {
        progress[i].loaded = loaded;
        onProgress(progress.map((file) => ({ ...file })));
      }), fetch);
      const expected = manifest.files[name]?.sha256;
      if (!expected) throw new BundleError(`${name} is not listed in the manifest`);
      if (await sha256Hex(bytes) !== expected) {
        throw new BundleError(`${bundle}/${name} does not match its sha256 in the manifest: the file was changed or corrupted`);
      }
      files[name] = bytes;
    }
    let config;
    try {
      config = checkConfig(JSON.parse(new TextDecoder().decode(files["config.json"])));
    } catch (error) {
      throw new BundleError(`${bundle}/config.json: ${error.message}`);
    }
    if (JSON.stringify(checkConfig(manifest.config)) !== JSON.stringify(config)) {
      throw new BundleError(`${bundle}/manifest.json's config differs from config.json`);
    }
    const tokenizer = new BundleTokenizer(JSON.parse(new TextDecoder().decode(files[manifest.tokenizer])));
    tokenizer.checkCompatible(config);
    const options = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: "all" };
    const sessions = {};
    for (const graph of GRAPHS) {
      const { file, weights: external } = manifest.graphs[graphKeys[graph]];
      const externalData = external.map((path) => ({ path, data: files[path] }));  // the same bytes for every graph
      sessions[graph] = await ort.InferenceSession.create(files[file], { ...options, externalData });
    }
    return new Translator(new OnnxBackend(ort, sessions, config, manifest.graphs.decoder_step.top_k), tokenizer, manifest);
  }

  constructor(backend, tokenizer, manifest) {
    this.backend = backend;
    this.tokenizer = tokenizer;
    this.manifest = manifest;
    this.config = backend.config;
  }

  get sourceLang() { return this.manifest.languages?.source ?? null; }
  get targetLang() { return this.manifest.languages?.target ?? null; }
  /** The most tokens a source may have (its EOS takes one more position). */
  get maxSourceTokens() { return this.config.max_positions - 1; }

  /**
   * Every layer's and head's attention of every kind for `text` translated as `tokenIds` (Python's Attention):
   * {sourceTokens (the source subwords and </s>), targetTokens (tokenIds, then </s> when `finished`), encoder
   * [layers][heads][S][S], decoder [layers][heads][T][T], cross [layers][heads][T][S]}, row t being the step that
   * produced targetTokens[t]; one teacher-forced pass, with the heads `headsOff` names switched off (see headMasks).
   * A beam-search node's partial hypothesis (finished false) gives that node's attention in its last rows.
   */
  async attend(text, tokenIds, { finished = true, headsOff = null } = {}) {
    const masks = headMasks(this.config, headsOff);
    const { eos_id: eos, bos_id: bos, max_positions: maxPositions } = this.config;
    const source = [...this.tokenizer.encode(text), eos];
    if (source.length > maxPositions) throw new RangeError(`the source has ${source.length} tokens, more than the model's max_positions (${maxPositions})`);
    const output = [...tokenIds, ...(finished ? [eos] : [])];
    if (!output.length || output.length > maxPositions) throw new RangeError(`a translation of 1 to ${maxPositions} tokens (EOS included) is needed, got ${output.length}`);
    const weights = await this.backend.attend(source, [bos, ...output.slice(0, -1)], masks);
    return { sourceTokens: this.tokenizer.tokens(source), targetTokens: this.tokenizer.tokens(output), ...weights };
  }

  /**
   * Translate texts, returned in input order: {source, text, tokens, tokenIds, score, unknownCharacters,
   * hypotheses, crossAttention?}. beamSize 1 is greedy; the output has at most a n + b tokens (EOS counted; a and b
   * from the manifest's search rule, 1.5 and 10 for the shipped bundles) and
   * at most maxLength. An empty text gives "". A source over maxSourceTokens is an error. returnAttention adds the
   * cross-attention of the chosen tokens, [layers][heads][steps][source tokens]; recordBeams adds `beams`, every
   * step of the search (see beamSearch's records; Python's BeamRecord); targetPrefix, one entry per text (null, a
   * text or an array of subword tokens), is the start each translation must take (Python's target_prefix);
   * headsOff switches attention heads off for the whole search (Python's heads_off, see headMasks).
   */
  async translate(texts, { beamSize = 5, lengthPenalty = 1.0, maxLength = null, nBest = 1, batchSize = 32,
    returnAttention = false, recordBeams = false, targetPrefix = null, headsOff = null } = {}) {
    if (typeof texts === "string") throw new TypeError("translate() takes an array of texts; wrap a single text in one");
    checkOptions({ beamSize, lengthPenalty, maxLength, nBest, batchSize }, this.backend.topK / 2);
    const masks = headMasks(this.config, headsOff);
    const prefixes = this.prefixIds(texts, targetPrefix);
    const { eos_id: eos, bos_id: bos, max_positions: maxPositions } = this.config;
    const encoded = texts.map((text, i) => {
      const ids = this.tokenizer.encode(text);
      if (ids.length + 1 > maxPositions) {
        throw new RangeError(`source ${i} has ${ids.length + 1} tokens, more than the model's max_positions (${maxPositions})`);
      }
      return ids.length ? [...ids, eos] : [];
    });
    const { max_length_a: a, max_length_b: b } = this.manifest.search;
    const longest = (ids) => Math.min(maxPositions - 1, Math.floor(a * ids.length + b), maxLength ?? maxPositions - 1);
    encoded.forEach((ids, i) => {
      if (ids.length && prefixes && prefixes[i].length >= longest(ids)) {
        throw new RangeError(`targetPrefix[${i}] has ${prefixes[i].length} tokens; the translation of this text has at most ${longest(ids)} (EOS included)`);
      }
    });
    const results = texts.map((text, i) => encoded[i].length ? null : { source: text, text: "", tokens: [], tokenIds: [],
      score: 0, unknownCharacters: 0, hypotheses: [{ tokenIds: [], logProb: 0, score: 0, finished: true }],
      ...(returnAttention ? { crossAttention: [] } : {}), ...(recordBeams ? { beams: { steps: [], hypotheses: [] } } : {}) });
    const order = texts.map((_, i) => i).filter((i) => encoded[i].length)
      .sort((a, b) => encoded[a].length - encoded[b].length); // stable, as Python's sorted
    for (let start = 0; start < order.length; start += batchSize) {
      const batch = order.slice(start, start + batchSize);
      const sources = batch.map((i) => encoded[i]);
      const maxLengths = sources.map(longest);
      const forced = prefixes ? await this.backend.forcedTokens(sources, batch.map((i) => prefixes[i]), masks) : null;
      const state = await this.backend.start(sources, masks);
      const records = recordBeams ? [] : null;
      const found = await beamSearch(this.backend, state, maxLengths, { beamSize, lengthPenalty, nBest, records, forced });
      const attention = returnAttention ? await this.backend.crossAttention(sources, found.map(([best]) =>
        [bos, ...best.tokenIds, ...(best.finished ? [eos] : [])].slice(0, -1)), masks) : null;
      batch.forEach((i, b) => {
        const best = found[b][0];
        results[i] = { source: texts[i], text: this.tokenizer.decode(best.tokenIds), tokens: this.tokenizer.tokens(best.tokenIds),
          tokenIds: best.tokenIds, score: best.score, unknownCharacters: this.tokenizer.unknownCharacters(texts[i]),
          hypotheses: found[b], ...(attention ? { crossAttention: attention[b] } : {}),
          ...(records ? { beams: records[b] } : {}) };
      });
    }
    return results;
  }
}
