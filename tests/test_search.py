import math

import numpy as np
import pytest

from conftest import tiny_config
from core.config import TransformerConfig
from core.search import (BEAM_STATUSES, MAX_LENGTH_A, MAX_LENGTH_B, SearchCancelled, SearchRules, beam_search,
                         max_target_length,
                         top_k_indices, top_k_tokens, translate)

PAD, BOS, EOS, A, B = 0, 1, 2, 3, 4

# Next-token probabilities by the tokens produced so far (BOS excluded).
TABLE = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS: 0.3, A: 0.35, B: 0.35},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
    (A, A): {EOS: 0.98, A: 0.01, B: 0.01},
    (A, B): {EOS: 0.98, A: 0.01, B: 0.01},
}


class ScriptedBackend:
    """A stub decoder whose next-token distribution is read from TABLE; the state is each row's history."""

    config = TransformerConfig(vocab_size=5)

    def __init__(self):
        self.calls = 0

    def start(self, source_ids):
        return [()] * len(source_ids)

    def step(self, last_tokens, state, k):
        self.calls += 1
        histories = [h if token == BOS else h + (int(token),) for h, token in zip(state, last_tokens)]
        log_probs = np.full((len(histories), 5), -np.inf)
        for row, history in enumerate(histories):
            for token, probability in TABLE.get(history, {EOS: 1.0}).items():
                log_probs[row, token] = math.log(probability)
        return *top_k_tokens(log_probs, k), histories

    def reorder(self, state, index):
        return [state[i] for i in index]


def search(beam_size, length_penalty=0.0, n_best=1, max_length=10):
    backend = ScriptedBackend()
    return beam_search(backend, backend.start(np.zeros((1, 1))), [max_length], beam_size=beam_size,
                       length_penalty=length_penalty, n_best=n_best)[0]


def test_greedy_follows_the_locally_best_token():
    (best,) = search(beam_size=1)
    assert best.token_ids == (A, A)
    assert best.log_prob == pytest.approx(math.log(0.6 * 0.35 * 0.98))
    assert best.finished


def test_beam_search_finds_the_better_sequence_with_exact_scores():
    best, second = search(beam_size=2, n_best=2)
    assert best.token_ids == (B,)
    assert best.log_prob == pytest.approx(math.log(0.4) + math.log(0.9))
    assert best.score == pytest.approx(best.log_prob)  # length_penalty 0: raw log-probability
    assert second.token_ids == (A, A)
    assert second.log_prob == pytest.approx(math.log(0.6) + math.log(0.35) + math.log(0.98))


def test_length_penalty_divides_by_length_including_eos():
    best, second = search(beam_size=2, n_best=2, length_penalty=1.0)
    assert best.token_ids == (B,)
    assert best.score == pytest.approx((math.log(0.4) + math.log(0.9)) / 2)
    assert second.score == pytest.approx((math.log(0.6) + math.log(0.35) + math.log(0.98)) / 3)


def test_max_length_stops_unfinished_hypotheses():
    (best,) = search(beam_size=1, max_length=1)
    assert best.token_ids == (A,)
    assert not best.finished
    assert best.log_prob == pytest.approx(math.log(0.6))


def test_finished_sentences_leave_the_batch():
    backend = ScriptedBackend()
    results = beam_search(backend, backend.start(np.zeros((2, 1))), [10, 1], beam_size=2)
    assert [r[0].token_ids for r in results] == [(B,), (A,)]
    assert backend.calls == 3


def test_invalid_options():
    with pytest.raises(ValueError):
        search(beam_size=0)
    with pytest.raises(ValueError):
        search(beam_size=2, n_best=3)


def test_cancelled_stops_the_search_at_the_next_step():
    backend = ScriptedBackend()
    with pytest.raises(SearchCancelled):
        beam_search(backend, backend.start(np.zeros((1, 1))), [10], beam_size=2,
                    cancelled=lambda: backend.calls >= 1)
    assert backend.calls == 1  # asked before each step: the second never ran


def test_the_length_rule_is_defined_once():
    config = TransformerConfig(vocab_size=5, max_positions=64)
    assert (MAX_LENGTH_A, MAX_LENGTH_B) == (1.5, 10)
    assert max_target_length(4, config) == 16 and max_target_length(4, config, max_length=3) == 3
    assert max_target_length(60, config) == 63  # BOS takes the first of the decoder's 64 positions


def test_top_k_indices_orders_by_value_then_index():
    values = np.array([[0.1, 0.5, 0.5, -np.inf, 0.3]])
    assert top_k_indices(values, 3).tolist() == [[1, 2, 4]]


class IdTokenizer:
    def encode(self, text):
        return [int(token) for token in text.split()]

    def encode_with_unknown(self, text):
        ids = self.encode(text)
        return ids, [str(i) for i in ids], 0

    def decode(self, ids):
        return " ".join(map(str, ids))

    def id_to_token(self, token_id):
        return str(token_id)


def uncached_greedy(model, source, max_length):
    """Independent reference: re-run the whole decoder each step and take the argmax."""
    import torch

    config = model.config
    source_ids = torch.tensor([source + [config.eos_id]])
    target = [config.bos_id]
    with torch.no_grad():
        for _ in range(max_length):
            next_token = int(model(source_ids, torch.tensor([target]))[0, -1].argmax())
            if next_token == config.eos_id:
                break
            target.append(next_token)
    return target[1:]


@pytest.mark.torch
def test_beam_size_one_equals_greedy_on_a_model():
    import torch

    from core.decoding import TorchBackend
    from core.model import Transformer

    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=30)).eval()
    sources = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
    texts = [" ".join(map(str, s)) for s in sources]
    results = translate(TorchBackend(model), IdTokenizer(), texts, beam_size=1,
                        rules=SearchRules(max_length_a=1.0, max_length_b=3))
    for source, result in zip(sources, results):
        assert result.token_ids == uncached_greedy(model, source, max_length=len(source) + 1 + 3)


@pytest.mark.torch
def test_translate_keeps_input_order_and_batches():
    import torch

    from core.decoding import TorchBackend
    from core.model import Transformer

    torch.manual_seed(1)
    model = Transformer(tiny_config(vocab_size=30)).eval()
    texts = ["5 6 7 8 9 10", "5", "7 7", "12 13 14"]
    one_by_one = [translate(TorchBackend(model), IdTokenizer(), [t], beam_size=3)[0] for t in texts]
    together = translate(TorchBackend(model), IdTokenizer(), texts, beam_size=3, batch_size=2)
    assert [r.source for r in together] == texts
    for alone, batched in zip(one_by_one, together):
        assert alone.token_ids == batched.token_ids
        assert alone.score == pytest.approx(batched.score, abs=1e-4)
    with pytest.raises(TypeError):
        translate(TorchBackend(model), IdTokenizer(), "5 6", beam_size=1)


def recorded(beam_size, max_length=10):
    backend, records = ScriptedBackend(), []
    found = beam_search(backend, backend.start(np.zeros((1, 1))), [max_length], beam_size=beam_size, n_best=beam_size,
                        length_penalty=0.0, records=records)[0]
    return found, records


def test_the_beam_record_holds_every_ranked_candidate_and_leads_to_each_hypothesis():
    found, (record,) = recorded(beam_size=2)
    assert found == search(beam_size=2, n_best=2)  # recording changes nothing
    first, second = record.steps[:2]
    assert [(n.token_id, n.parent, n.status) for n in first] == [(A, -1, "kept"), (B, -1, "kept")]
    assert first[0].log_prob == pytest.approx(math.log(0.6)) and first[1].token_log_prob == pytest.approx(math.log(0.4))
    # Step 1: B then EOS (0.36) ranks first and finishes; A's continuations are kept, A then EOS is pruned (rank 3)
    assert [(n.token_id, n.parent, n.status) for n in second] == [
        (EOS, 1, "finished"), (A, 0, "kept"), (B, 0, "kept"), (EOS, 0, "pruned")]
    assert all(status in BEAM_STATUSES for step in record.steps for status in (n.status for n in step))
    assert len(record.hypotheses) == len(found)
    for hypothesis, (step, index) in zip(found, record.hypotheses):
        path = record.path(step, index)
        assert path[-1].status == "finished"
        assert tuple(n.token_id for n in path[:-1]) == hypothesis.token_ids and path[-1].token_id == EOS
        assert path[-1].log_prob == pytest.approx(hypothesis.log_prob)
        assert [n.token_log_prob for n in path] == pytest.approx(list(hypothesis.token_log_probs))


def test_beams_cut_by_the_length_limit_are_stopped():
    found, (record,) = recorded(beam_size=2, max_length=1)
    assert [n.status for n in record.steps[0]] == ["stopped", "stopped"]
    assert [record.path(*end)[-1].token_id for end in record.hypotheses] == [h.token_ids[-1] for h in found]
    assert not any(h.finished for h in found)


def test_a_forced_prefix_is_taken_whatever_the_model_prefers_and_the_search_continues_from_it():
    backend, records = ScriptedBackend(), []
    forced = [[(B, math.log(0.4))]]  # the model prefers A first
    (best, *_), = beam_search(backend, backend.start(np.zeros((1, 1))), [10], beam_size=2, length_penalty=0.0,
                              forced=forced, records=records)
    assert best.token_ids == (B,) and best.log_prob == pytest.approx(math.log(0.4 * 0.9))
    assert best.token_log_probs == pytest.approx((math.log(0.4), math.log(0.9)))
    first, second = records[0].steps[:2]
    assert [(n.token_id, n.parent, n.status) for n in first] == [(B, -1, "kept")]  # one beam: the forced token
    assert second[0].token_id == EOS and second[0].parent == 0 and second[0].status == "finished"
