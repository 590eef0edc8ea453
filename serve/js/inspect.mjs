// What a page that looks inside a translation needs besides the translator, written to match Python exactly
// (tests/golden/inspect.json, written by tests/golden/make_inspect_golden.py, checks every function here):
//
//   fitText(translator, text, limits, { cut })   serve/policy.py's fit_text and bad_character
//   tokenLogProbs(record, rank)                  a hypothesis's per-token log-probabilities, from its beam record
//   new ConfidenceModel(json).assess(result)     core/confidence.py's ConfidenceModel.assess
//
// No DOM, no onnxruntime: it runs in Node and in browsers.

/** Python's InputError: input a surface must refuse; the message says what is wrong and what would fit. */
export class InputError extends Error {}

const codePoints = (text) => [...text];

/** serve/policy.py's bad_character: the first control character (tab, newline and carriage return are fine) or
 * lone surrogate, described with its code-point position; null when there is none. */
export function badCharacter(text) {
  let position = 0;
  for (const character of text) { // code points: a lone surrogate stays one
    const code = character.codePointAt(0);
    const surrogate = character.length === 1 && code >= 0xd800 && code <= 0xdfff;
    if (surrogate || (/\p{Cc}/u.test(character) && !"\t\n\r".includes(character))) {
      const kind = surrogate ? "a lone surrogate" : "a control character";
      return `${kind} U+${code.toString(16).toUpperCase().padStart(4, "0")} at position ${position}`;
    }
    position += 1;
  }
  return null;
}

/** The longest prefix of text, cut before a word, whose encoding has at most maxTokens tokens (Python's
 * Tokenizer.truncate); a first word longer than the limit is cut inside, one code point at a time. */
export function truncate(tokenizer, text, maxTokens) {
  if (tokenizer.encode(text).length <= maxTokens) return text;
  const fits = (prefix) => tokenizer.encode(prefix).length <= maxTokens;
  const ends = [...text.matchAll(/\S(?=\s)/gu)].map((match) => match.index + match[0].length); // before each space
  let best = null;
  for (let low = 0, high = ends.length - 1; low <= high;) { // token counts grow with the prefix: bisect
    const middle = (low + high) >> 1;
    if (fits(text.slice(0, ends[middle]))) { best = ends[middle]; low = middle + 1; } else high = middle - 1;
  }
  if (best !== null) return text.slice(0, best);
  const characters = codePoints(text);
  let length = 0;
  while (length < characters.length && fits(characters.slice(0, length + 1).join(""))) length += 1;
  return characters.slice(0, length).join("").trimEnd();
}

/**
 * serve/policy.py's fit_text: {text, tokens, charsBefore, tokensBefore} for a text within limits.maxChars (code
 * points) and min(limits.maxTokens, translator.maxSourceTokens) source tokens; over a limit it is cut (charsBefore
 * / tokensBefore say from what) when `cut`, else an InputError with Python's message.
 */
export function fitText(translator, text, limits, { cut }) {
  let charsBefore = null, tokensBefore = null;
  const characters = codePoints(text);
  if (characters.length > limits.maxChars) {
    if (!cut) throw new InputError(`${characters.length} characters; at most ${limits.maxChars}`);
    charsBefore = characters.length;
    text = characters.slice(0, limits.maxChars).join("");
  }
  const maxTokens = Math.min(limits.maxTokens, translator.maxSourceTokens);
  const tokens = translator.tokenizer.encode(text).length;
  if (tokens <= maxTokens) return { text, tokens, charsBefore, tokensBefore };
  if (!cut) throw new InputError(`${tokens} tokens; at most ${maxTokens}`);
  tokensBefore = tokens;
  text = truncate(translator.tokenizer, text, maxTokens);
  return { text, tokens: translator.tokenizer.encode(text).length, charsBefore, tokensBefore };
}

/** The nodes from the first step to record.steps[step][index], each {step, index, node} (Python's BeamRecord.path):
 * a node's parent is its beam's index among the previous step's kept nodes. */
export function pathTo(record, step, index) {
  const path = [{ step, index, node: record.steps[step][index] }];
  while (path[0].step > 0) {
    const { step: at, node } = path[0];
    const kept = record.steps[at - 1].flatMap((candidate, i) => (candidate.status === "kept" ? [i] : []));
    path.unshift({ step: at - 1, index: kept[node.parent], node: record.steps[at - 1][kept[node.parent]] });
  }
  return path;
}

/** The per-token log-probabilities of a result's rank-th hypothesis (EOS included when it finished), read from its
 * beam record (translate(..., { recordBeams: true })): Python's Hypothesis.token_log_probs. */
export function tokenLogProbs(record, rank = 0) {
  const [step, index] = record.hypotheses[rank];
  return pathTo(record, step, index).map(({ node }) => node.tokenLogProb);
}

/** core/confidence.py's words_of: the lowercased letter runs (Python's [^\W\d_]+) of the NFC text. */
export function wordsOf(text) {
  return text.normalize("NFC").toLowerCase().match(/[\p{L}\p{Nl}\p{No}]+/gu) ?? [];
}

const FEATURES = {
  mean_token_log_prob: ({ logProbs }) => logProbs.reduce((a, b) => a + b, 0) / logProbs.length,
  min_token_log_prob: ({ logProbs }) => Math.min(...logProbs),
  known_word_share: ({ result, words }) => {
    const found = wordsOf(result.source);
    return found.length ? found.filter((word) => words.has(word)).length / found.length : 0;
  },
  tokens_per_word: ({ result, sourceTokens }) => sourceTokens / Math.max(result.source.split(/\s+/u).filter(Boolean).length, 1),
  unknown_character_share: ({ result }) => result.unknownCharacters / Math.max(codePoints(result.source.trim()).length, 1),
};

export const CONFIDENCE_MESSAGES = { in_domain: "looks like the training data",
  out_of_domain: "outside what this model knows: treat with care" };

/** core/confidence.py's ConfidenceModel, read from a bundle's confidence.json (parsed JSON). */
export class ConfidenceModel {
  constructor(spec) {
    if (spec?.format !== "attention-mt-confidence" || spec.format_version !== 1) {
      throw new Error("not an attention-mt-confidence file of version 1");
    }
    const unknown = spec.features.filter((name) => !(name in FEATURES));
    if (unknown.length) throw new Error(`unknown confidence features ${unknown.join(", ")}`);
    Object.assign(this, { features: spec.features, mean: spec.mean, scale: spec.scale, weights: spec.weights,
      bias: spec.bias, threshold: spec.threshold, words: new Set(spec.words) });
  }

  /** {score, label, message} of a translate() result made with recordBeams; null for an empty source. */
  assess(result, translator) {
    const sourceTokens = translator.tokenizer.encode(result.source).length; // </s> not counted
    if (!sourceTokens) return null;
    const context = { result, words: this.words, sourceTokens, logProbs: tokenLogProbs(result.beams) };
    const z = this.features.reduce((sum, name, i) =>
      sum + this.weights[i] * (FEATURES[name](context) - this.mean[i]) / this.scale[i], this.bias);
    const score = z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
    const label = score >= this.threshold ? "in_domain" : "out_of_domain";
    return { score, label, message: CONFIDENCE_MESSAGES[label] };
  }
}
