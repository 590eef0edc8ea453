"""Greedy and beam search over a step function, written once and free of torch.

The PyTorch reference (:mod:`core.decoding`) and the onnxruntime server drive the same code through the
:class:`SearchBackend` protocol: ``start`` encodes a batch of sources into a decoding state, ``step`` feeds one
token per row and returns the k most likely next tokens with their log-probabilities (a backend computes them
where its model runs: in the ONNX graph, in torch), ``reorder`` selects state rows by index. Beam reordering,
growing a batch into beams after the first step and dropping finished sentences are all that one index select.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .confidence import Confidence
from .config import TransformerConfig
from .heads import AttentionTrace, HeadMask, Trace


class SearchBackend(Protocol):
    """What search needs from a model: the config, an encoder call and a cached decoder step."""

    config: TransformerConfig
    max_beam_size: int  # the largest beam its step can serve (it returns 2 x beam_size candidates per row)
    # Optional, False when absent: True asks translate() never to batch sources of different lengths, for a backend
    # whose rows would otherwise depend on their batch mates' padding (row-wise int8, see core.bundle).
    same_length_batches: bool

    def start(self, source_ids: np.ndarray, head_mask: HeadMask | None = None) -> Any:
        """Encode source_ids [B, S] (int64, padded with pad_id) into a decoding state for B rows; ``head_mask``
        (None: every head on) holds for every row and every later step."""

    def step(self, last_tokens: np.ndarray, state: Any, k: int) -> tuple[np.ndarray, np.ndarray, Any]:
        """Feed last_tokens [N]; return each row's k most likely next tokens and the advanced state.

        The log-probabilities [N, k] (float32) and token ids [N, k] (int64) are best first, equal log-probabilities
        in token-id order (:func:`top_k_tokens` does it for a full [N, V] array).
        """

    def reorder(self, state: Any, index: np.ndarray) -> Any:
        """Return the state whose row i is row index[i] of state."""

    def attend(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
               head_mask: HeadMask | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One teacher-forced pass; every layer's and head's weights as float32 arrays.

        source_ids [B, S] and decoder_input_ids [B, T] (BOS first), both right-padded with pad_id. Returns encoder
        self-attention [enc_layers, B, H, S, S], decoder self-attention [dec_layers, B, H, T, T] and cross attention
        [dec_layers, B, H, T, S]. Only needed for ``translate(..., return_attention=True)``.
        """

    def trace(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
              head_mask: HeadMask | None = None) -> dict[str, AttentionTrace]:
        """One teacher-forced pass; per kind of :data:`core.heads.HEAD_KINDS` its :class:`core.heads.AttentionTrace`,
        every field float32 [layers, B, ...]. Inputs as for ``attend``. Only needed for ``return_trace=True``."""

    def log_probs(self, source_ids: np.ndarray, decoder_input_ids: np.ndarray,
                  head_mask: HeadMask | None = None) -> np.ndarray:
        """One teacher-forced pass: the next-token log-probabilities [B, T, V] (float32) after each decoder input.

        Inputs as for ``attend``. Only needed for ``translate(..., target_prefix=...)``.
        """


MAX_LENGTH_A, MAX_LENGTH_B = 1.5, 10  # the output length rule: at most 1.5 n + 10 tokens for n source tokens
SEARCH_FILE = "search.json"  # a model folder's SearchRules (absent: the defaults)


@dataclass(frozen=True)
class SearchRules:
    """How a model is searched, saved with it (a model folder's ``search.json``, a bundle manifest's ``search``);
    every field's default is our own models' search, and a file may leave any out.

    - ``max_length_a``, ``max_length_b``: the output length rule, at most ``int(a * n + b)`` tokens (EOS included)
      for n source tokens; ``a = 0`` is a fixed limit of b (transformers' ``max_length`` - 1).
    - ``banned_ids``: tokens never produced (transformers' ``bad_words_ids`` of single tokens: their log-probability
      set to -inf after the log-softmax, the others not renormalized).
    - ``forced_eos``: the last step a length limit allows produces EOS, with log-probability 0 (transformers'
      ``forced_eos_token_id``).
    - ``early_stopping``: True ends a sentence once beam_size hypotheses have finished; False is transformers'
      ``early_stopping=False``: the beam_size best finished hypotheses are kept, and the search goes on while the
      best open beam, scored at its current length, beats the worst of them.
    - ``float32_scores``: cumulative and length-normalized scores kept in float32, as transformers keeps them (else
      float64), so that near-ties fall the same way.
    """

    max_length_a: float = MAX_LENGTH_A
    max_length_b: int = MAX_LENGTH_B
    banned_ids: tuple[int, ...] = ()
    forced_eos: bool = False
    early_stopping: bool = True
    float32_scores: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "banned_ids", tuple(self.banned_ids))
        number = isinstance(self.max_length_a, (int, float)) and not isinstance(self.max_length_a, bool)
        if not number or not 0 <= self.max_length_a < float("inf"):
            raise ValueError(f"max_length_a must be a finite number >= 0, got {self.max_length_a!r}")
        if not isinstance(self.max_length_b, int) or isinstance(self.max_length_b, bool) or self.max_length_b < 0:
            raise ValueError(f"max_length_b must be an integer >= 0, got {self.max_length_b!r}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.banned_ids):
            raise ValueError(f"banned_ids must be token ids, got {list(self.banned_ids)!r}")
        for name in ("forced_eos", "early_stopping", "float32_scores"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "banned_ids": list(self.banned_ids)}

    @classmethod
    def from_dict(cls, values: dict) -> "SearchRules":
        if not isinstance(values, dict):
            raise ValueError(f"search rules must be a JSON object, got {values!r}")
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown search rules: {', '.join(unknown)}")
        return cls(**values)

    def check(self, config: TransformerConfig) -> None:
        """Raise if a banned id is outside the vocabulary or is EOS."""
        for token in self.banned_ids:
            if token >= config.vocab_size or token == config.eos_id:
                raise ValueError(f"banned id {token} is EOS or outside the vocabulary of {config.vocab_size}")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SEARCH_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "SearchRules":
        """A model folder's search.json; the defaults when it has none."""
        path = Path(directory) / SEARCH_FILE
        if not path.is_file():
            return cls()
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error


DEFAULT_RULES = SearchRules()


def max_target_length(source_length: int, config: TransformerConfig, max_length: int | None = None,
                      a: float = MAX_LENGTH_A, b: int = MAX_LENGTH_B) -> int:
    """The most tokens (EOS included) the search produces for a source of source_length tokens (EOS included):
    int(a * n + b), and at most ``max_length`` and the decoder's positions (BOS takes the first). Exported bundles
    record a and b in their manifest (``search.max_length_a/b``) for every other runtime."""
    longest = config.max_positions - 1
    return min(longest, int(a * source_length + b), max_length or longest)


class SearchCancelled(Exception):
    """The caller's ``cancelled()`` said stop: the search ended at a decoding step, with no result."""


@dataclass(frozen=True)
class Hypothesis:
    """One output sequence: token ids without BOS/EOS, its total log-probability and length-normalized score.

    ``token_log_probs`` holds the log-probability of each produced token, EOS included when ``finished`` (so it has
    ``len(token_ids) + finished`` entries and sums to ``log_prob``); it is empty for an empty source, which the model
    never ran on.
    """

    token_ids: tuple[int, ...]
    log_prob: float
    score: float
    finished: bool  # False when the search stopped it at the maximum length before it produced EOS
    token_log_probs: tuple[float, ...] = ()


BEAM_STATUSES = ("kept", "finished", "stopped", "pruned")


@dataclass(frozen=True)
class BeamNode:
    """One candidate the beam search ranked at one decoding step of one sentence (``record_beams=True``).

    ``parent`` is the index, among the previous step's ``kept`` nodes, of the beam this token extends (-1 at step
    0, whose parent is the decoder's start token, ``<s>`` in our models); ``log_prob`` is the beam's cumulative log-probability with this token,
    ``token_log_prob`` the token's own. ``status`` is one of :data:`BEAM_STATUSES`: ``kept`` (a beam of the next
    step), ``finished`` (an EOS the search accepted as a hypothesis), ``stopped`` (the output reached its maximum
    length here: an unfinished hypothesis) or ``pruned`` (ranked among the 2 x beam_size best, not kept).
    """

    token_id: int
    parent: int
    log_prob: float
    token_log_prob: float
    status: str


@dataclass(frozen=True)
class BeamRecord:
    """Every step of one sentence's beam search: ``steps[t]`` holds the candidates ranked at step t, best first;
    ``hypotheses[i]`` is the (step, index) of the node that ended the i-th returned hypothesis (best first)."""

    steps: tuple[tuple[BeamNode, ...], ...]
    hypotheses: tuple[tuple[int, int], ...]

    def path(self, step: int, index: int) -> list[BeamNode]:
        """The nodes from step 0 to ``steps[step][index]``: the partial hypothesis that node ends."""
        nodes = [self.steps[step][index]]
        for earlier in range(step - 1, -1, -1):
            kept = [node for node in self.steps[earlier] if node.status == "kept"]
            nodes.append(kept[nodes[-1].parent])
        return nodes[::-1]


def length_normalized(log_prob: float, length: int, length_penalty: float) -> float:
    """score = log_prob / length^length_penalty (0 keeps the raw log-probability, 1 is the per-token mean)."""
    return log_prob / max(length, 1) ** length_penalty


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values of each row, best first; equal values in index order."""
    k = min(k, values.shape[1])
    candidates = np.argpartition(-values, k - 1, axis=1)[:, :k]  # [n, k], unordered
    chosen = np.take_along_axis(values, candidates, axis=1)
    order = np.lexsort((candidates, -chosen), axis=1)  # by value descending, then by index
    return np.take_along_axis(candidates, order, axis=1)


def top_k_tokens(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A backend's step answer from full log-probabilities [N, V]: the k best per row and their token ids."""
    ids = top_k_indices(log_probs, k)
    return np.take_along_axis(log_probs, ids, axis=1), ids.astype(np.int64)


def without_banned(log_probs: np.ndarray, ids: np.ndarray, banned: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A step's answer [N, k + len(banned)] without the banned tokens: each row's k best others, best first."""
    keep = np.argsort(np.isin(ids, banned), axis=1, kind="stable")[:, :k]  # the unbanned first, in their order
    return np.take_along_axis(log_probs, keep, axis=1), np.take_along_axis(ids, keep, axis=1)


def beam_search(
    backend: SearchBackend,
    state: Any,
    max_lengths: Sequence[int],
    *,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    n_best: int = 1,
    cancelled: Callable[[], bool] | None = None,
    records: list[BeamRecord] | None = None,
    forced: Sequence[Sequence[tuple[int, float]]] | None = None,
    rules: SearchRules = DEFAULT_RULES,
) -> list[list[Hypothesis]]:
    """Beam search for len(max_lengths) sentences whose encoded state is ``state``.

    Each step keeps the beam_size best unfinished continuations per sentence among the 2 * beam_size best
    candidates; a candidate ending in EOS among the top beam_size ranks becomes a finished hypothesis. A sentence is
    done once it has beam_size finished hypotheses or reaches its max length (then its open beams are kept,
    marked unfinished). beam_size=1 is exactly greedy decoding. Returns the n_best hypotheses of each sentence,
    best first by length-normalized score. ``rules`` (:class:`SearchRules`) may ban tokens, force EOS at the
    max length, keep scores in float32, and replace the end rule by transformers' ``early_stopping=False``: then
    only the beam_size best finished hypotheses are kept, a sentence is done once its best open beam (scored at its
    length) no longer beats the worst of them, and at its max length the candidates of the top beam_size ranks
    end it. ``cancelled`` is asked before every step; when it says True the search
    stops there and raises :class:`SearchCancelled`. When ``records`` is a list, one :class:`BeamRecord` per
    sentence is appended to it (recording costs nothing when it is None). ``forced`` gives each sentence a target
    prefix as (token, log-probability) pairs: its first steps take these tokens, one beam, whatever the model
    ranks first; the search continues from there (the hypotheses include the prefix, and their scores its
    log-probabilities). Each prefix must be shorter than its sentence's max length.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
    config = backend.config
    score_type = np.float32 if rules.float32_scores else np.float64
    banned = np.asarray(rules.banned_ids, dtype=np.int64)

    def normalized(total: float, length: int) -> float:
        if rules.float32_scores:  # transformers: a float32 tensor divided by a Python number, in float32
            return float(np.float32(total) / np.float32(max(length, 1) ** length_penalty))
        return length_normalized(total, length, length_penalty)

    batch_size = len(max_lengths)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    steps: list[list[list[BeamNode]]] = [[] for _ in range(batch_size)]  # filled only when records is a list
    ends: list[list[tuple[int, int]]] = [[] for _ in range(batch_size)]  # (step, node) of each finished hypothesis
    active = np.arange(batch_size)  # the sentence of each group of rows
    group = 1  # state rows per sentence: one until the first step has chosen beam_size different beams
    scores = np.zeros((batch_size, group), dtype=score_type)  # cumulative log-probability of each open beam
    history = np.zeros((batch_size, 0), dtype=np.int64)
    history_log_probs = np.zeros((batch_size, 0))  # each history token's own log-probability, reordered with it
    last_tokens = np.full(batch_size, config.bos_id, dtype=np.int64)
    k = min(2 * beam_size, config.vocab_size - len(banned))

    def finish(sentence: int, hypothesis: Hypothesis, end: tuple[int, int]) -> None:
        finished[sentence].append(hypothesis)
        ends[sentence].append(end)
        if not rules.early_stopping and len(finished[sentence]) > beam_size:  # keep the beam_size best
            worst = min(range(len(finished[sentence])), key=lambda i: finished[sentence][i].score)
            del finished[sentence][worst], ends[sentence][worst]

    for step in range(max(max_lengths, default=0)):
        if cancelled is not None and cancelled():
            raise SearchCancelled
        # [n * group, k] each; banned tokens may be among the best, so ask for that many more and drop them
        top_log_probs, top_ids, state = backend.step(last_tokens, state, k + len(banned))
        if len(banned):
            top_log_probs, top_ids = without_banned(top_log_probs, top_ids, banned, k)
        n = len(active)
        if rules.forced_eos:  # a row at its sentence's last step: EOS is its one candidate, log-probability 0
            last = np.repeat([step + 1 >= max_lengths[sentence] for sentence in active], group)  # [n * group]
            if last.any():
                top_log_probs, top_ids = top_log_probs.copy(), top_ids.copy()
                top_log_probs[last], top_ids[last] = -np.inf, config.eos_id
                top_log_probs[last, 0] = 0.0
        candidates = (scores[:, :, None] + top_log_probs.reshape(n, group, k)).reshape(n, group * k)
        step_log_probs = top_log_probs.reshape(n, group * k)  # each candidate's own token log-probability
        # The flat index beam * V + token orders equal scores exactly as a search over all [group, V] would.
        flat = (np.arange(group)[None, :, None] * config.vocab_size + top_ids.reshape(n, group, k)).reshape(n, -1)
        ranked = np.lexsort((flat, -candidates), axis=1)[:, : 2 * beam_size]  # [n, 2K], best first

        keep_rows, next_scores, next_tokens, next_log_probs, still_active = [], [], [], [], []
        for row, sentence in enumerate(active):
            at_max_length = step + 1 >= max_lengths[sentence]
            top_ranks_end = at_max_length and not rules.early_stopping  # transformers: the top ranks all end here
            beams: list[tuple[int, int, float, float]] = []  # (source row, token, score, token log-probability)
            nodes: list[list] = []  # [token, parent, total, token log-probability, status] of each ranked candidate
            opened: list[int] = []  # the node of each beam
            if forced is not None and step < len(forced[sentence]):  # a prefix token: the one beam (beam 0) takes it
                token, log_prob = forced[sentence][step]
                total = float(scores[row, 0]) + log_prob
                beams.append((row * group, token, total, log_prob))
                opened.append(0)
                if records is not None:
                    nodes.append([token, 0 if step else -1, total, log_prob, "kept"])
                ranked_here = ()
            else:
                ranked_here = ranked[row]
            for rank, column in enumerate(ranked_here):
                total = float(candidates[row, column])
                if total == -np.inf:
                    break
                beam, token = divmod(int(flat[row, column]), config.vocab_size)
                source_row = row * group + beam
                log_prob = float(step_log_probs[row, column])
                status = "pruned"
                if token == config.eos_id:
                    if rank < beam_size:
                        tokens = tuple(int(t) for t in history[source_row])
                        log_probs = tuple(float(p) for p in history_log_probs[source_row]) + (log_prob,)
                        finish(sentence, Hypothesis(tokens, total, normalized(total, len(tokens) + 1), True, log_probs),
                               (step, len(nodes)))
                        status = "finished"
                elif top_ranks_end:
                    if rank < beam_size:
                        tokens = tuple(int(t) for t in history[source_row]) + (token,)
                        log_probs = tuple(float(p) for p in history_log_probs[source_row]) + (log_prob,)
                        finish(sentence, Hypothesis(tokens, total, normalized(total, len(tokens)), False, log_probs),
                               (step, len(nodes)))
                        status = "stopped"
                elif len(beams) < beam_size:
                    beams.append((source_row, token, total, log_prob))
                    opened.append(len(nodes))
                    status = "kept"
                if records is not None:
                    nodes.append([token, beam if step else -1, total, log_prob, status])
            if at_max_length and not top_ranks_end:
                for (source_row, token, total, log_prob), node in zip(beams, opened):
                    tokens = tuple(int(t) for t in history[source_row]) + (token,)
                    log_probs = tuple(float(p) for p in history_log_probs[source_row]) + (log_prob,)
                    finish(sentence, Hypothesis(tokens, total, normalized(total, len(tokens)), False, log_probs),
                           (step, node))
            if rules.early_stopping:
                done = len(finished[sentence]) >= beam_size or at_max_length or not beams
            else:  # transformers' early_stopping=False: can the best open beam still beat the worst finished one?
                full = len(finished[sentence]) >= beam_size
                done = at_max_length or not beams or (full and normalized(beams[0][2], step + 1) <= min(
                    hypothesis.score for hypothesis in finished[sentence]))
            if records is not None:
                for node in opened if done else ():
                    nodes[node][4] = "stopped" if at_max_length else "pruned"
                steps[sentence].append([BeamNode(*node) for node in nodes])
            if done:
                continue
            while len(beams) < beam_size:  # only when the vocabulary offers too few candidates
                beams.append((beams[0][0], beams[0][1], -np.inf, -np.inf))
            still_active.append(sentence)
            for source_row, token, total, log_prob in beams:
                keep_rows.append(source_row)
                next_tokens.append(token)
                next_scores.append(total)
                next_log_probs.append(log_prob)

        if not still_active:
            break
        index = np.asarray(keep_rows, dtype=np.int64)
        state = backend.reorder(state, index)  # the visible beam reordering (after step 0 it also grows the beams)
        group = beam_size
        last_tokens = np.asarray(next_tokens, dtype=np.int64)
        history = np.concatenate([history[index], last_tokens[:, None]], axis=1)
        history_log_probs = np.concatenate([history_log_probs[index], np.asarray(next_log_probs)[:, None]], axis=1)
        scores = np.asarray(next_scores, dtype=score_type).reshape(len(still_active), group)
        active = np.asarray(still_active)

    best_first = [sorted(range(len(found)), key=lambda i: -found[i].score)[:n_best] for found in finished]
    if records is not None:
        records.extend(BeamRecord(tuple(tuple(nodes) for nodes in steps[sentence]),
                                  tuple(ends[sentence][i] for i in order)) for sentence, order in enumerate(best_first))
    return [[found[i] for i in order] for found, order in zip(finished, best_first)]


@dataclass(frozen=True)
class Attention:
    """Every layer's and head's attention weights for the decoding steps that produced one translation.

    Row t of ``decoder`` and ``cross`` is the step that produced ``target_tokens[t]`` (EOS included when the
    hypothesis finished); that step's decoder input was ``decoder_input_tokens[t]`` (``start_token``, the
    decoder's first input ``bos_id``: ``<s>`` in our models, ``<pad>`` in Marian's; then the tokens produced before
    it), which are also the keys of ``decoder``. Weights are float32 and each row sums to 1.
    """

    source_tokens: list[str]  # S: the source subwords and </s>
    target_tokens: list[str]  # T: one per decoding step
    encoder: np.ndarray  # [enc_layers, heads, S, S] encoder self-attention
    decoder: np.ndarray  # [dec_layers, heads, T, T] decoder self-attention (causal)
    cross: np.ndarray  # [dec_layers, heads, T, S] encoder-decoder attention
    start_token: str = "<s>"  # the token of the config's bos_id

    @property
    def decoder_input_tokens(self) -> list[str]:
        return [self.start_token] + self.target_tokens[:-1]


@dataclass(frozen=True)
class Translation:
    """The best translation of one source text, with its subword tokens and the n-best list.

    ``unknown_characters`` counts the source characters the model cannot read (they became ``<unk>``); a caller
    should warn when it is not 0. ``attention`` is set by ``translate(..., return_attention=True)``, ``beams`` (every
    step of the beam search) by ``translate(..., record_beams=True)``, ``trace`` (the numbers behind every attention
    weight, :class:`core.heads.Trace`) by ``translate(..., return_trace=True)``. ``confidence``
    says whether the source looks like the model's training data (:class:`core.confidence.Confidence`); a translator
    whose bundle is calibrated sets it (``confidence.json``), otherwise it is None.
    """

    source: str
    text: str
    tokens: list[str]
    token_ids: list[int]
    score: float
    hypotheses: list[Hypothesis]
    source_tokens: list[str]
    unknown_characters: int
    attention: Attention | None = None
    confidence: Confidence | None = None
    beams: BeamRecord | None = None
    trace: Trace | None = None


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    """Right-pad integer sequences into an int64 array [B, max_len]."""
    width = max((len(sequence) for sequence in sequences), default=0)
    batch = np.full((len(sequences), width), pad_id, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = sequence
    return batch


def translate(
    backend: SearchBackend,
    tokenizer,
    texts: Sequence[str],
    *,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    rules: SearchRules = DEFAULT_RULES,
    max_length: int | None = None,
    n_best: int = 1,
    return_attention: bool = False,
    record_beams: bool = False,
    target_prefix: Sequence[str | Sequence[str] | None] | None = None,
    heads_off: Sequence | None = None,
    return_trace: bool = False,
    batch_size: int = 64,
    pool: Executor | None = None,
    progress: bool = False,
    cancelled: Callable[[], bool] | None = None,
) -> list[Translation]:
    """Translate texts with beam search (``beam_size=1`` is greedy).

    The output of a source of n tokens (EOS included) is at most ``rules.max_length_a * n + rules.max_length_b``
    tokens, EOS included, and at most ``max_length`` when given; ``rules`` (:class:`SearchRules`, the model's) also
    say which tokens are banned, whether EOS is forced at that limit, and when a beam search ends. A text that is empty after normalization translates to "" without
    running the model. Texts are batched by length and returned in input order; with a ``pool``, its threads search
    different batches at the same time with the same backend (which must allow concurrent calls, as onnxruntime
    and torch do), and a batch's results do not depend on which thread ran it. ``return_attention`` adds every
    layer's and head's weights of the chosen hypothesis (:class:`Attention`), from one teacher-forced pass of
    ``backend.attend`` over its tokens. ``record_beams`` adds every step of the search (:class:`BeamRecord`: each
    candidate ranked, its parent beam, scores and fate). ``target_prefix`` gives each text the start of its
    translation (None for none; a text, which is tokenized, or a list of subword tokens): the search takes those
    tokens first and continues from them, and the translation includes them, each scored with its log-probability
    (one more teacher-forced pass, ``backend.log_probs``). ``heads_off`` switches attention heads off for the
    whole search ((kind, layer, head) entries, see :meth:`core.heads.HeadMask.switched_off`); ``return_trace``
    adds the numbers behind every attention weight of the chosen hypothesis (:class:`core.heads.Trace`, one more
    teacher-forced pass, ``backend.trace``). ``cancelled`` stops the search at its next decoding step
    (:class:`SearchCancelled`): work for a caller that has gone away is not finished.
    """
    if isinstance(texts, str):
        raise TypeError("translate() takes a list of texts; wrap a single text in a list")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    config = backend.config
    max_source = config.max_positions
    encoded, source_tokens, unknown = [], [], []
    for text in texts:
        ids, tokens, unknown_characters = tokenizer.encode_with_unknown(text)
        if len(ids) + 1 > max_source:
            raise ValueError(f"source has {len(ids) + 1} tokens, more than the model's max_positions ({max_source}): {text[:60]!r}")
        encoded.append(ids + [config.eos_id] if ids else [])
        source_tokens.append(tokens + [tokenizer.id_to_token(config.eos_id)] if ids else [])
        unknown.append(unknown_characters)
    prefixes = prefix_ids(tokenizer, config, texts, target_prefix)
    head_mask = HeadMask.switched_off(heads_off or [], config)
    for index, (ids, prefix) in enumerate(zip(encoded, prefixes or [])):
        longest = max_target_length(len(ids), config, max_length, rules.max_length_a, rules.max_length_b)
        if ids and len(prefix) >= longest:
            raise ValueError(f"target_prefix[{index}] has {len(prefix)} tokens; the translation of this text has at "
                             f"most {longest} (EOS included)")
    results: list[Translation | None] = [None] * len(texts)
    for i in (i for i, ids in enumerate(encoded) if not ids):
        results[i] = empty_translation(texts[i], config, return_attention, record_beams, return_trace)
    order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i]))
    batches = length_batches(order, [len(ids) for ids in encoded], batch_size,
                             getattr(backend, "same_length_batches", False))

    def translate_batch(batch: list[int]) -> None:
        sources = [encoded[i] for i in batch]
        max_lengths = [max_target_length(len(ids), config, max_length, rules.max_length_a, rules.max_length_b)
                       for ids in sources]
        if cancelled is not None and cancelled():
            raise SearchCancelled
        forced = forced_tokens(backend, sources, [prefixes[i] for i in batch], head_mask) if prefixes else None
        state = backend.start(pad_batch(sources, config.pad_id), head_mask)
        records: list[BeamRecord] | None = [] if record_beams else None
        found = beam_search(backend, state, max_lengths, beam_size=beam_size, length_penalty=length_penalty,
                            n_best=n_best, cancelled=cancelled, records=records, forced=forced, rules=rules)
        chosen = [hypotheses[0] for hypotheses in found]
        nothing = [None] * len(batch)
        attentions = attention_of(backend, tokenizer, sources, chosen, head_mask) if return_attention else nothing
        traces = trace_of(backend, sources, chosen, head_mask) if return_trace else nothing
        for i, hypotheses, attention, beams, trace in zip(batch, found, attentions, records or nothing, traces):
            best = hypotheses[0]
            results[i] = Translation(
                source=texts[i],
                text=tokenizer.decode(list(best.token_ids)),
                tokens=[tokenizer.id_to_token(t) for t in best.token_ids],
                token_ids=list(best.token_ids),
                score=best.score,
                hypotheses=hypotheses,
                source_tokens=source_tokens[i],
                unknown_characters=unknown[i],
                attention=attention,
                beams=beams,
                trace=trace,
            )

    parallel = pool is not None and len(batches) > 1
    done = pool.map(translate_batch, batches) if parallel else map(translate_batch, batches)
    if progress:
        from tqdm import tqdm

        done = tqdm(done, total=len(batches), desc="translating", unit="batch")
    for _ in done:
        pass
    return results  # type: ignore[return-value]


def length_batches(order: list[int], lengths: list[int], batch_size: int, same_length: bool) -> list[list[int]]:
    """Consecutive runs of ``order`` (text indices sorted by length) of at most ``batch_size``; with ``same_length``
    a run also ends where the length changes, so no row of a batch is padded."""
    batches: list[list[int]] = []
    for index in order:
        if (not batches or len(batches[-1]) == batch_size
                or (same_length and lengths[batches[-1][-1]] != lengths[index])):
            batches.append([])
        batches[-1].append(index)
    return batches


def prefix_ids(tokenizer, config: TransformerConfig, texts: Sequence[str],
               target_prefix: Sequence[str | Sequence[str] | None] | None) -> list[list[int]] | None:
    """Each text's target prefix as token ids (ValueError for one that is not a text or known subword tokens);
    None when no text has one."""
    if target_prefix is None:
        return None
    if isinstance(target_prefix, str) or len(target_prefix) != len(texts):
        raise ValueError(f"target_prefix must be a list with one entry (None, a text or a list of tokens) per text, "
                         f"{len(texts)} here")
    resolved = []
    for index, prefix in enumerate(target_prefix):
        try:
            resolved.append(prefix_token_ids(tokenizer, config, prefix))
        except ValueError as error:
            raise ValueError(f"target_prefix[{index}]: {error}") from None
    return resolved if any(resolved) else None


def prefix_token_ids(tokenizer, config: TransformerConfig, prefix: str | Sequence[str] | None) -> list[int]:
    """One target prefix as token ids: a text is tokenized, subword tokens are looked up (ValueError for one that is
    not in the vocabulary or is a special token); None or "" is no prefix."""
    if prefix is None or isinstance(prefix, str):
        return tokenizer.encode(prefix) if prefix else []
    specials = {config.pad_id, config.bos_id, config.eos_id}
    ids = [tokenizer.token_to_id(token) if isinstance(token, str) else None for token in prefix]
    unknown = [token for token, id_ in zip(prefix, ids) if id_ is None or id_ in specials]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a subword token of this model")
    return ids


def forced_tokens(backend: SearchBackend, sources: list[list[int]], prefixes: list[list[int]],
                  head_mask: HeadMask | None = None) -> list[list[tuple[int, float]]]:
    """Each source's prefix tokens with their log-probabilities, from one teacher-forced pass over the batch."""
    config = backend.config
    rows = [row for row, prefix in enumerate(prefixes) if prefix]
    forced: list[list[tuple[int, float]]] = [[] for _ in prefixes]
    if not rows:
        return forced
    inputs = pad_batch([[config.bos_id] + prefixes[row][:-1] for row in rows], config.pad_id)
    log_probs = backend.log_probs(pad_batch([sources[row] for row in rows], config.pad_id), inputs,
                                  head_mask)  # [R, T, V]
    for r, row in enumerate(rows):
        forced[row] = [(token, float(log_probs[r, t, token])) for t, token in enumerate(prefixes[row])]
    return forced


def empty_translation(text: str, config: TransformerConfig, return_attention: bool, record_beams: bool = False,
                      return_trace: bool = False) -> Translation:
    """The translation of a text with no tokens: "" and, on request, attention and trace arrays with no rows and a
    beam record with no steps."""
    attention = trace = None
    if return_attention:
        encoder = np.zeros((config.n_encoder_layers, config.n_heads, 0, 0), dtype=np.float32)
        decoder = np.zeros((config.n_decoder_layers, config.n_heads, 0, 0), dtype=np.float32)
        attention = Attention([], [], encoder, decoder, decoder.copy())
    if return_trace:
        trace = Trace(*(empty_trace(config, layers) for layers in
                        (config.n_encoder_layers, config.n_decoder_layers, config.n_decoder_layers)))
    beams = BeamRecord((), ()) if record_beams else None
    return Translation(text, "", [], [], 0.0, [Hypothesis((), 0.0, 0.0, True)], [], 0, attention, beams=beams,
                       trace=trace)


def empty_trace(config: TransformerConfig, layers: int) -> AttentionTrace:
    rows = np.zeros((layers, 0, config.d_model), dtype=np.float32)  # [L, 0, D]
    per_head = np.zeros((layers, config.n_heads, 0, config.d_head), dtype=np.float32)  # [L, H, 0, d_head]
    return AttentionTrace(rows, per_head, per_head, per_head, per_head,
                          np.zeros((layers, config.n_heads, 0, config.d_model), dtype=np.float32))


def trace_of(backend: SearchBackend, sources: list[list[int]], chosen: list[Hypothesis],
             head_mask: HeadMask | None = None) -> list[Trace]:
    """The trace of each chosen hypothesis (:class:`core.heads.Trace`), from one teacher-forced pass over the batch,
    cut to each sentence's real lengths."""
    config = backend.config
    source_ids, decoder_ids, outputs = teacher_forced_inputs(config, sources, chosen)
    traces = backend.trace(source_ids, decoder_ids, head_mask)
    found = []
    for row, (source, output) in enumerate(zip(sources, outputs)):
        s, t = len(source), len(output)
        lengths = {"encoder": (s, s), "decoder": (t, t), "cross": (t, s)}  # (queries, keys) of each kind

        def cut(kind: str) -> AttentionTrace:
            queries, keys = lengths[kind]
            trace = traces[kind]
            return AttentionTrace(
                inputs=np.ascontiguousarray(trace.inputs[:, row, :queries]),  # [L, Lq, D]
                queries=np.ascontiguousarray(trace.queries[:, row, :, :queries]),  # [L, H, Lq, d_head]
                keys=np.ascontiguousarray(trace.keys[:, row, :, :keys]),  # [L, H, Lk, d_head]
                values=np.ascontiguousarray(trace.values[:, row, :, :keys]),
                heads=np.ascontiguousarray(trace.heads[:, row, :, :queries]),
                head_outputs=np.ascontiguousarray(trace.head_outputs[:, row, :, :queries]),  # [L, H, Lq, D]
            )

        found.append(Trace(cut("encoder"), cut("decoder"), cut("cross")))
    return found


def teacher_forced_inputs(config: TransformerConfig, sources: list[list[int]],
                          chosen: list[Hypothesis]) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Padded sources and decoder inputs that reproduce each chosen hypothesis, and each one's output tokens (EOS
    included when it finished): the decoder inputs are BOS, then every token produced but the last."""
    outputs = [list(h.token_ids) + ([config.eos_id] if h.finished else []) for h in chosen]
    decoder_inputs = [[config.bos_id] + output[:-1] for output in outputs]
    return pad_batch(sources, config.pad_id), pad_batch(decoder_inputs, config.pad_id), outputs


def attention_of(backend: SearchBackend, tokenizer, sources: list[list[int]], chosen: list[Hypothesis],
                 head_mask: HeadMask | None = None) -> list[Attention]:
    """The attention of each chosen hypothesis, from one teacher-forced pass over the batch."""
    source_ids, decoder_ids, outputs = teacher_forced_inputs(backend.config, sources, chosen)
    encoder, decoder, cross = backend.attend(source_ids, decoder_ids, head_mask)
    attentions = []
    for row, (source, output) in enumerate(zip(sources, outputs)):
        s, t = len(source), len(output)
        attentions.append(Attention(
            source_tokens=[tokenizer.id_to_token(i) for i in source],
            target_tokens=[tokenizer.id_to_token(i) for i in output],
            encoder=np.ascontiguousarray(encoder[:, row, :, :s, :s], dtype=np.float32),  # [L, H, S, S]
            decoder=np.ascontiguousarray(decoder[:, row, :, :t, :t], dtype=np.float32),  # [L, H, T, T]
            cross=np.ascontiguousarray(cross[:, row, :, :t, :s], dtype=np.float32),  # [L, H, T, S]
            start_token=tokenizer.id_to_token(backend.config.bos_id),
        ))
    return attentions
