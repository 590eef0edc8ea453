import asyncio
import hashlib
import json
import os
import threading
import time
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require_multi30k
from core.search import SearchCancelled, pad_batch
from core.translator import available_cores
from serve import BundleError, Translator
from core.search import SearchRules
from serve.api import resident_memory_bytes
from serve.policy import InputError, InputLimits, attention_weights, fit_text, search_cost
from serve.batcher import Batcher, QueueFull, SearchOptions, searcher

EN_DE = ROOT / "models" / "en-de"
# The first one is translated differently by greedy and beam 5 (checked below); batched together they also pad.
SENTENCES = [
    "A group of people stand in front of an igloo while a woman in a red jacket takes a picture of them.",
    "Two men are playing chess in a park.",
]


@pytest.fixture(scope="module")
def translator():
    return Translator(EN_DE / "onnx")


@pytest.fixture(scope="module")
def reference():
    from core.decoding import TorchTranslator

    return TorchTranslator(EN_DE)


def softmax_rows(trace, layer: int, causal: bool) -> np.ndarray:
    """softmax(q K^T / sqrt(d_k)) of one layer, recomputed from the trace's q and K alone: [H, Lq, Lk]."""
    scores = trace.queries[layer] @ trace.keys[layer].transpose(0, 2, 1) / np.sqrt(trace.queries.shape[-1])
    if causal:  # a decoder step sees itself and the steps before it
        scores = np.where(np.tril(np.ones(scores.shape[-2:], bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)


def test_the_trace_reproduces_every_heatmap_row(translator):
    """From the trace's q and K alone, every attention weight of the heatmaps; weights @ V is each head's output."""
    result, = translator.translate(SENTENCES[:1], return_attention=True, return_trace=True)
    attention, trace = result.attention, result.trace
    S, T = len(attention.source_tokens), len(attention.target_tokens)
    for kind, (queries, keys) in {"encoder": (S, S), "decoder": (T, T), "cross": (T, S)}.items():
        part, weights = trace.of(kind), getattr(attention, kind)
        assert part.queries.shape == (4, 4, queries, 32) and part.keys.shape == (4, 4, keys, 32)
        assert part.inputs.shape == (4, queries, 128) and part.head_outputs.shape == (4, 4, queries, 128)
        for layer in range(4):
            np.testing.assert_allclose(softmax_rows(part, layer, causal=kind == "decoder"), weights[layer],
                                       atol=1e-5, err_msg=f"{kind} layer {layer}")
            np.testing.assert_allclose(weights[layer] @ part.values[layer], part.heads[layer], atol=1e-5)


def test_heads_off_change_the_search_and_none_off_is_the_plain_translation(translator):
    plain = translator.translate(SENTENCES, return_attention=True)
    none_off = translator.translate(SENTENCES, return_attention=True, heads_off=[])
    assert [t.token_ids for t in none_off] == [t.token_ids for t in plain]
    assert [t.score for t in none_off] == [t.score for t in plain]
    assert all(np.array_equal(a.attention.cross, b.attention.cross) for a, b in zip(plain, none_off))
    every_cross_head = [("cross", layer, head) for layer in range(4) for head in range(4)]
    blind = translator.translate(SENTENCES, heads_off=every_cross_head, return_trace=True)
    assert [t.token_ids for t in blind] != [t.token_ids for t in plain]  # without the source it cannot translate
    assert not blind[0].trace.cross.heads.any()
    with pytest.raises(ValueError, match="cross head must be an integer from 0 to 3, got 4"):
        translator.translate(SENTENCES, heads_off=[("cross", 0, 4)])
    with pytest.raises(ValueError, match="heads_off must be a list"):
        translator.translate(SENTENCES, heads_off="cross.0.0")


@pytest.mark.torch
def test_heads_off_and_traces_equal_the_torch_model(translator, reference):
    heads_off = ["encoder.1.2", "decoder.0.3", "cross.3.0", "cross.2.1"]
    ours = translator.translate(SENTENCES, beam_size=5, heads_off=heads_off, return_trace=True)
    theirs = reference.translate(SENTENCES, beam_size=5, heads_off=heads_off, return_trace=True)
    assert [t.token_ids for t in ours] == [t.token_ids for t in theirs]
    assert [t.score for t in ours] == pytest.approx([t.score for t in theirs], abs=1e-4)
    for a, b in zip(ours, theirs):
        for kind in ("encoder", "decoder", "cross"):
            for name, value in zip(a.trace.of(kind).field_names(), a.trace.of(kind).parts()):
                np.testing.assert_allclose(value, getattr(b.trace.of(kind), name), atol=1e-4, err_msg=f"{kind} {name}")


@pytest.mark.torch
@pytest.mark.parametrize("beam_size", [1, 5])
def test_output_equals_the_torch_reference(translator, reference, beam_size):
    texts = SENTENCES + ["Ein Hund rennt durch den Schnee.", "A little girl is climbing into a wooden playhouse."]
    ours, theirs = translator.translate(texts, beam_size=beam_size), reference.translate(texts, beam_size=beam_size)
    assert [t.token_ids for t in ours] == [t.token_ids for t in theirs]
    assert [t.score for t in ours] == pytest.approx([t.score for t in theirs], abs=1e-4)


def stepwise_attention(model, source_ids: list[int], decoder_inputs: list[int]):
    """What the torch model computes when it decodes these tokens one step at a time with its cache."""
    import torch

    with torch.inference_mode():
        encoded = model.encode(torch.tensor([source_ids]), output_attentions=True)
        cache = model.start_cache(encoded.memory)
        self_rows, cross_rows = [], []
        for position, token in enumerate(decoder_inputs):
            step = model.decode(torch.tensor([[token]]), encoded.source_mask, cache, output_attentions=True)
            cache = step.cache
            row = step.self_attentions[:, 0, :, 0].numpy()  # [L, H, position + 1]
            padded = np.zeros(row.shape[:2] + (len(decoder_inputs),), dtype=np.float32)
            padded[..., : position + 1] = row
            self_rows.append(padded)
            cross_rows.append(step.cross_attentions[:, 0, :, 0].numpy())  # [L, H, S]
    return encoded.attentions[:, 0].numpy(), np.stack(self_rows, axis=2), np.stack(cross_rows, axis=2)


def test_greedy_and_beam_choose_differently_here(translator):
    greedy, beam = translator.translate(SENTENCES[:1], beam_size=1), translator.translate(SENTENCES[:1], beam_size=5)
    assert greedy[0].token_ids != beam[0].token_ids


@pytest.mark.torch
@pytest.mark.parametrize("beam_size", [1, 5])
def test_attention_is_that_of_the_chosen_steps(translator, reference, beam_size):
    config = translator.config
    results = translator.translate(SENTENCES, beam_size=beam_size, return_attention=True)
    for result in results:
        attention = result.attention
        source_ids = translator.tokenizer.encode(result.source) + [config.eos_id]
        outputs = result.token_ids + [config.eos_id]  # every hypothesis here finished
        assert attention.target_tokens == result.tokens + ["</s>"]
        assert attention.source_tokens == result.source_tokens
        assert attention.decoder_input_tokens == ["<s>"] + result.tokens
        encoder, decoder, cross = stepwise_attention(reference.model, source_ids, [config.bos_id] + outputs[:-1])
        layers, heads, s, t = config.n_decoder_layers, config.n_heads, len(source_ids), len(outputs)
        assert attention.encoder.shape == (config.n_encoder_layers, heads, s, s)
        assert attention.decoder.shape == (layers, heads, t, t) and attention.cross.shape == (layers, heads, t, s)
        assert all(a.dtype == np.float32 for a in (attention.encoder, attention.decoder, attention.cross))
        np.testing.assert_allclose(attention.encoder, encoder, atol=1e-5)
        np.testing.assert_allclose(attention.decoder, decoder, atol=1e-5)
        np.testing.assert_allclose(attention.cross, cross, atol=1e-5)


def test_the_beam_record_leads_to_every_returned_hypothesis_and_changes_nothing(translator):
    texts = SENTENCES + ["A little girl is climbing into a wooden playhouse.", ""]
    plain = translator.translate(texts, beam_size=5, n_best=3)
    recorded = translator.translate(texts, beam_size=5, n_best=3, record_beams=True)
    assert [r.hypotheses for r in recorded] == [p.hypotheses for p in plain] and plain[0].beams is None
    for result in recorded[:-1]:
        record = result.beams
        assert len(record.hypotheses) == 3 and len(record.steps) >= len(result.token_ids) + 1
        assert all(sum(n.status == "kept" for n in step) <= 5 and len(step) <= 10 for step in record.steps)
        for hypothesis, end in zip(result.hypotheses, record.hypotheses):
            path = record.path(*end)
            assert path[-1].status == ("finished" if hypothesis.finished else "stopped")
            assert tuple(n.token_id for n in path[: len(hypothesis.token_ids)]) == hypothesis.token_ids
            assert path[-1].log_prob == hypothesis.log_prob
            assert tuple(n.token_log_prob for n in path) == hypothesis.token_log_probs
    assert recorded[-1].beams.steps == () and recorded[-1].beams.hypotheses == ()


def test_a_target_prefix_starts_the_translation_and_the_search_continues(translator):
    text = "Two men are playing chess in a park."
    (free,) = translator.translate([text], beam_size=1)
    own = free.tokens[:3]  # the model's own first tokens: forcing them changes nothing (greedy)
    (same,) = translator.translate([text], beam_size=1, target_prefix=[own])
    assert same.token_ids == free.token_ids
    assert same.hypotheses[0].token_log_probs == pytest.approx(free.hypotheses[0].token_log_probs, abs=1e-4)
    (other, empty) = translator.translate([text, ""], beam_size=5, target_prefix=["Zwei Frauen", "Ein"])
    assert other.text.startswith("Zwei Frauen") and other.text != free.text and empty.text == ""
    assert other.tokens[:2] == translator.tokenizer.tokenize("Zwei Frauen")
    (recorded,) = translator.translate([text], beam_size=5, target_prefix=[["▁Zwei", "▁Frauen"]], record_beams=True)
    assert recorded.token_ids == other.token_ids
    assert [len(step) for step in recorded.beams.steps[:2]] == [1, 1]  # one forced beam per prefix token
    with pytest.raises(ValueError, match=r"target_prefix\[0\]: '▁nosuchtoken' is not a subword token"):
        translator.translate([text], target_prefix=[["▁nosuchtoken"]])
    with pytest.raises(ValueError, match=r"target_prefix\[0\] has 40 tokens; the translation of this text has at most"):
        translator.translate(["A dog."], target_prefix=[["▁Ein"] * 40])
    with pytest.raises(ValueError, match="one entry"):
        translator.translate([text], target_prefix="Zwei")


@pytest.mark.torch
def test_a_target_prefix_gives_the_torch_reference_output(translator, reference):
    texts, prefixes = SENTENCES, ["Eine Gruppe", ["▁Zwei", "▁Männer", "▁sitzen"]]
    for beam_size in (1, 5):
        ours = translator.translate(texts, beam_size=beam_size, target_prefix=prefixes)
        theirs = reference.translate(texts, beam_size=beam_size, target_prefix=prefixes)
        assert [t.token_ids for t in ours] == [t.token_ids for t in theirs]
        assert [t.score for t in ours] == pytest.approx([t.score for t in theirs], abs=1e-4)


def test_translating_without_attention_returns_none(translator):
    assert translator.translate(["A dog runs."])[0].attention is None


def test_unknown_characters_are_counted(translator):
    emoji, plain, mixed = translator.translate(["🙂🙂🙂", "A dog runs.", "A dog 日本 runs 🙂."], beam_size=1)
    assert (emoji.unknown_characters, plain.unknown_characters, mixed.unknown_characters) == (3, 0, 3)


def test_empty_text_translates_to_empty(translator):
    empty, spaces, real = translator.translate(["", "  \t ", "A dog runs."], return_attention=True)
    assert empty.text == spaces.text == "" and empty.tokens == [] and real.text
    assert empty.attention.cross.shape == (4, 4, 0, 0)


def test_typed_special_tokens_are_text(translator):
    ids = translator.tokenizer.encode("A man </s> rides <pad> a <s> bike <unk>")
    assert not set(ids) & {0, 1, 2}
    result = translator.translate(["A man </s> rides a bike."], beam_size=1)[0]
    assert result.source_tokens[-1] == "</s>" and result.source_tokens.count("</s>") == 1
    spec = json.loads((EN_DE / "onnx" / "tokenizer.json").read_text(encoding="utf-8"))
    assert not [t for t in spec["added_tokens"] if t["content"] in ("<pad>", "<s>", "</s>", "<unk>")]


def test_max_length_caps_the_output(translator):
    result = translator.translate(SENTENCES[:1], beam_size=2, max_length=3)[0]
    assert len(result.token_ids) <= 3 and not result.hypotheses[0].finished


def test_over_long_source_is_an_error_and_truncate_fits_it(translator):
    text = "word " * 2000
    with pytest.raises(ValueError, match="max_positions"):
        translator.translate([text])
    cut = translator.tokenizer.truncate(text, 50)
    assert len(translator.tokenizer.encode(cut)) <= 50 and text.startswith(cut)


def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "serve", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_keeps_order_and_empty_lines(translator, tmp_path):
    lines = ["Two men are playing chess in a park.", "", "A dog runs.", "A little girl is climbing into a wooden playhouse."]
    done = run_cli("translate", "--model", str(EN_DE / "onnx"), "--beam", "5", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    expected = [t.text for t in translator.translate(lines, beam_size=5)]
    assert done.stdout.split("\n")[:-1] == expected and expected[1] == ""
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run_cli("translate", "--model", str(EN_DE / "onnx"), "--beam", "1", "--workers", "1", "--input", str(source),
                   "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert len(target.read_text(encoding="utf-8").split("\n")) == len(lines) + 1


def test_cli_target_prefix_file(translator, tmp_path):
    lines, prefixes = ["Two men are playing chess in a park.", "A dog runs."], ["Zwei Frauen", ""]
    (tmp_path / "prefix.txt").write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    done = run_cli("translate", "--model", str(EN_DE / "onnx"), "--target-prefix", str(tmp_path / "prefix.txt"),
                   stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [t.text for t in translator.translate(lines, target_prefix=["Zwei Frauen", None])]
    (tmp_path / "prefix.txt").write_text("Zwei\n", encoding="utf-8")
    done = run_cli("translate", "--model", str(EN_DE / "onnx"), "--target-prefix", str(tmp_path / "prefix.txt"),
                   stdin="\n".join(lines) + "\n")
    assert done.returncode == 1 and done.stderr == "error: --target-prefix: 1 lines for 2 input lines\n"


def test_cli_heads_off(translator):
    lines = ["Two men are playing chess in a park.", "A dog runs."]
    heads_off = ["cross.3.0", "cross.3.1", "cross.3.2", "cross.3.3", "decoder.1.1"]
    done = run_cli("translate", "--model", str(EN_DE / "onnx"), "--heads-off", ",".join(heads_off),
                   stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [t.text for t in translator.translate(lines, heads_off=heads_off)]


def test_cli_bad_bundle_is_a_one_line_error(tmp_path):
    done = run_cli("translate", "--model", str(tmp_path / "missing"), stdin="A dog.\n")
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0 and "manifest.json" in done.stderr
    shutil.copytree(EN_DE / "onnx", tmp_path / "bundle")
    with open(tmp_path / "bundle" / "teacher_forced.onnx", "r+b") as graph:
        graph.seek(1000)
        graph.write(b"\0" * 16)
    done = run_cli("translate", "--model", str(tmp_path / "bundle"), stdin="A dog.\n")
    assert done.returncode != 0 and "teacher_forced.onnx does not match its sha256" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(BundleError):
        Translator(tmp_path / "bundle")


def test_cli_garbage_graph_with_a_matching_checksum_is_a_one_line_error(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(EN_DE / "onnx", bundle)
    (bundle / "encoder.onnx").write_bytes(b"not an onnx graph" * 100)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["encoder.onnx"]["sha256"] = hashlib.sha256((bundle / "encoder.onnx").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for command in (("translate",), ("http", "--port", "0")):
        done = run_cli(*command, "--model", str(bundle), stdin="A dog.\n")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "encoder.onnx is not a graph onnxruntime can load" in done.stderr


def test_int8_of_a_bundle_without_int8_graphs_is_a_one_line_error(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(EN_DE / "onnx", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["graphs"] = {name: graph for name, graph in manifest["graphs"].items() if not name.endswith("_int8")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))  # as bundles exported before int8 are
    message = f"{bundle} has no int8 graphs: export the model again (python -m export MODEL_DIR --force)"
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Translator(bundle, precision="int8")
    assert Translator(bundle).precision == "float32"
    for command in (("translate",), ("http", "--port", "0")):  # the flag reaches the loader of both commands
        done = run_cli(*command, "--model", str(bundle), "--precision", "int8", stdin="A dog.\n")
        assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
    with pytest.raises(ValueError, match="precision must be one of float32, int8, got 'int4'"):
        Translator(bundle, precision="int4")


def test_int8_translations_never_depend_on_batch_mates():
    """200 captions batched at 64 and one by one: the same tokens. int8 batches hold sources of one length only; with
    padding, one of these de-en sentences changed (a float rounding of ~1e-7 in attention, amplified by int8)."""
    texts = (require_multi30k() / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:200]
    translator = Translator(ROOT / "models" / "de-en" / "onnx", precision="int8")
    assert translator.backend.same_length_batches
    assert not Translator(ROOT / "models" / "de-en" / "onnx").backend.same_length_batches
    batched = translator.translate(texts, beam_size=1, batch_size=64)
    alone = translator.translate(texts, beam_size=1, batch_size=1)
    assert [t.token_ids for t in batched] == [t.token_ids for t in alone]


def test_length_batches_split_at_length_changes_only_when_asked():
    from core.search import length_batches

    lengths = [3, 3, 3, 4, 4, 5, 9]
    assert length_batches(list(range(7)), lengths, 2, same_length=False) == [[0, 1], [2, 3], [4, 5], [6]]
    assert length_batches(list(range(7)), lengths, 2, same_length=True) == [[0, 1], [2], [3, 4], [5], [6]]
    assert length_batches([], [], 2, same_length=True) == []


@pytest.mark.parametrize("flags, message", [
    (["--beam", "0"], "must be an integer >= 1, got 0"),
    (["--beam", "1000"], "beam_size must be an integer between 1 and 16, got 1000"),
    (["--beam", "3.5"], "'3.5' is not an integer"),
    (["--batch-size", "0"], "must be an integer >= 1, got 0"),
    (["--workers", "-1"], "must be an integer >= 1, got -1"),
    (["--length-penalty", "nan"], "must be a finite number >= 0, got nan"),
    (["--length-penalty", "inf"], "must be a finite number >= 0, got inf"),
    (["--output", "/nonexistent-folder/out.txt"], "--output: no folder /nonexistent-folder"),
    (["--output", "."], "--output: . is a folder"),
    (["--heads-off", "cross.9.0"], "cross layer must be an integer from 0 to 3, got 9"),
])
def test_cli_user_mistakes_are_one_line_errors(flags, message):
    done = run_cli("translate", "--model", str(EN_DE / "onnx"), *flags, stdin="A dog.\n")
    assert done.returncode in (1, 2) and message in done.stderr and done.stdout == "", done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].count(message) == 1


def test_unwritable_output_is_refused_before_loading_or_translating(tmp_path, monkeypatch):
    """Simulated with os.access (root may write anywhere): the check comes before the bundle is even read."""
    from serve.__main__ import main as serve_main

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(SystemExit) as stopped:
        serve_main(["translate", "--model", str(tmp_path / "no-bundle-here"), "--output", str(tmp_path / "out.txt")])
    assert stopped.value.code == f"error: --output: {tmp_path / 'out.txt'} is not writable"


@pytest.mark.parametrize("options, message", [
    (dict(beam_size=0), "beam_size must be an integer between 1 and 16, got 0"),
    (dict(beam_size=17), "beam_size must be an integer between 1 and 16, got 17"),
    (dict(beam_size=2.0), "beam_size must be an integer between 1 and 16, got 2.0"),
    (dict(beam_size=True), "beam_size must be an integer between 1 and 16, got True"),
    (dict(length_penalty=float("nan")), "length_penalty must be a finite number >= 0, got nan"),
    (dict(length_penalty=-1), "length_penalty must be a finite number >= 0, got -1"),
    (dict(max_length=0), "max_length must be an integer >= 1, got 0"),
    (dict(n_best=6), "n_best must be an integer between 1 and beam_size (5), got 6"),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
])
def test_translate_refuses_options_no_search_can_honour(translator, options, message):
    with pytest.raises(ValueError) as raised:
        translator.translate(["A dog runs."], **options)
    assert str(raised.value) == message


def test_translator_runs_where_the_os_has_no_cpu_affinity(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: the core count comes from os.cpu_count instead."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert available_cores() == 3
    assert Translator(EN_DE / "onnx").workers == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1


def test_resident_memory_is_measured_without_proc(monkeypatch):
    import builtins

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert resident_memory_bytes() > 10 * 2**20  # the peak, from getrusage


def test_bundles_record_their_search_rules_and_a_bad_one_is_refused(tmp_path):
    for pair in ("en-de", "de-en"):
        manifest = json.loads((ROOT / "models" / pair / "onnx" / "manifest.json").read_text())
        assert SearchRules.from_dict(manifest["search"]) == SearchRules()  # our models' search: the defaults
    bundle = tmp_path / "bundle"
    shutil.copytree(EN_DE / "onnx", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "search": {"max_length_a": 0, "max_length_b": 2}}))
    translator = Translator(bundle)
    assert translator.rules == SearchRules(max_length_a=0, max_length_b=2)
    assert len(translator.translate(["Two young children are playing on the grass."])[0].token_ids) <= 2
    for search, message in (({"max_length_c": 2}, "unknown search rules: max_length_c"),
                            ({"banned_ids": [-1]}, "banned_ids must be token ids")):
        (bundle / "manifest.json").write_text(json.dumps({**manifest, "search": search}))
        with pytest.raises(BundleError, match=message):
            Translator(bundle)


def test_the_input_policy_cuts_or_refuses_and_prices_the_work(translator):
    limits = InputLimits(max_chars=40, max_tokens=6)
    fitted = fit_text(translator, "Two young children are playing with a red ball on the grass.", limits, cut=True)
    assert fitted.was_cut and fitted.chars_before == 60 and fitted.tokens_before > 6 >= fitted.tokens
    assert "Two young children are playing with a red ball on the grass.".startswith(fitted.text)
    with pytest.raises(InputError, match="60 characters; at most 40"):
        fit_text(translator, "Two young children are playing with a red ball on the grass.", limits, cut=False)
    assert not fit_text(translator, "A dog runs.", limits, cut=False).was_cut
    # beams x (source + most target tokens): 4 tokens + EOS = 5, at most 1.5 x 5 + 10 = 17 out
    assert search_cost(translator, 4, 5, None) == 5 * (5 + 17) and search_cost(translator, 4, 5, 3) == 5 * (5 + 3)
    config = translator.config
    assert attention_weights(translator, 4, 3) == config.n_heads * (
        config.n_encoder_layers * 25 + config.n_decoder_layers * (9 + 15))


class CountingSearch:
    """A batcher's search that records its batches; each text's result is derived from the text alone."""

    def __init__(self, delay: float = 0.0):
        self.batches, self.delay = [], delay

    def __call__(self, texts, options, cancelled, target_prefix=None):
        time.sleep(self.delay)
        self.batches.append((list(texts), options))
        prefixes = target_prefix or [None] * len(texts)
        return [f"{text}|{options.beam_size}" + (f"|{prefix}" if prefix else "") for text, prefix in zip(texts, prefixes)]


def test_batcher_gathers_concurrent_requests_and_keeps_results_apart():
    search = CountingSearch(delay=0.01)

    async def scenario():
        batcher = Batcher(search, max_batch_size=8, max_wait=0.01, max_queue=64)
        batcher.start()
        requests = [batcher.submit([f"t{i}a", f"t{i}b"], SearchOptions(beam_size=1 + i % 2),
                                   target_prefix=[f"p{i}", None] if i % 3 == 0 else None) for i in range(10)]
        results = await asyncio.gather(*requests)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())  # each text keeps its own target prefix, whatever batch it joined
    assert results == [[f"t{i}a|{1 + i % 2}" + (f"|p{i}" if i % 3 == 0 else ""), f"t{i}b|{1 + i % 2}"]
                       for i in range(10)]
    assert len(search.batches) < 10
    for texts, options in search.batches:  # a batch never mixes search options nor exceeds its size
        assert len(texts) <= 8 and all(text.endswith("a") or text.endswith("b") for text in texts)
        assert {int(t[1:-1]) % 2 for t in texts} == {options.beam_size - 1}


def test_batcher_workers_translate_batches_at_the_same_time():
    running, most = set(), [0]
    lock = threading.Lock()

    def search(texts, options, cancelled, target_prefix=None):
        with lock:
            running.add(threading.get_ident())
            most[0] = max(most[0], len(running))
        time.sleep(0.05)
        with lock:
            running.discard(threading.get_ident())
        return [text.upper() for text in texts]

    async def scenario():
        batcher = Batcher(search, max_batch_size=2, max_wait=0, max_queue=64, workers=2)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}"], SearchOptions()) for i in range(8)))
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [[f"T{i}"] for i in range(8)]
    assert most[0] == 2


def test_batcher_refuses_when_the_queue_is_full():
    async def scenario():
        batcher = Batcher(CountingSearch(delay=0.2), max_batch_size=2, max_wait=0, max_queue=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a", "b", "c", "d"], SearchOptions()))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(["e"], SearchOptions())
        result = await first
        await batcher.stop()
        return result

    assert asyncio.run(scenario()) == ["a|5", "b|5", "c|5", "d|5"]


def test_batcher_takes_turns_and_keeps_batches_within_their_cost():
    """A request of many costly sentences queued first: a light request that arrives after it waits one batch."""
    search = CountingSearch(delay=0.02)

    async def scenario():
        batcher = Batcher(search, max_batch_size=8, max_batch_cost=100, max_wait=0, max_queue=64)
        heavy = asyncio.ensure_future(batcher.submit([f"h{i}" for i in range(12)], SearchOptions(), [40] * 12))
        await asyncio.sleep(0)
        light = asyncio.ensure_future(batcher.submit(["l0"], SearchOptions(), [30]))
        await asyncio.sleep(0)
        batcher.start()
        results = await asyncio.gather(heavy, light)
        await batcher.stop()
        return results

    heavy, light = asyncio.run(scenario())
    assert light == ["l0|5"] and heavy == [f"h{i}|5" for i in range(12)]
    batches = [texts for texts, _ in search.batches]
    assert batches[0] == ["h0", "h1"]  # 2 x 40 fits the cost of 100; neither a third 40 nor the light 30 would
    assert batches[1] == ["l0", "h2"]  # the light request's turn: first, then the heavy one fills what is left
    assert all(len(texts) <= 2 for texts in batches)


def test_a_cancelled_request_leaves_the_queue_and_stops_its_running_search():
    asked, stopped = [], threading.Event()

    def search(texts, options, cancelled, target_prefix=None):
        while not cancelled():  # a long search that asks before each step
            time.sleep(0.01)
        asked.append(list(texts))
        stopped.set()
        raise SearchCancelled

    async def scenario():
        batcher = Batcher(search, max_batch_size=2, max_wait=0, max_queue=64)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(["a", "b", "c", "d"], SearchOptions()))
        await asyncio.sleep(0.1)
        assert batcher.queued == 2  # c and d wait while a and b are searched
        running.cancel()
        await asyncio.sleep(0.1)
        queued = batcher.queued
        await batcher.stop()
        return queued

    assert asyncio.run(scenario()) == 0 and stopped.is_set() and asked == [["a", "b"]]


def test_batched_translation_equals_unbatched(translator):
    texts = SENTENCES + ["A dog runs.", "Ein Mann fährt Fahrrad."]

    search = searcher(translator)
    batches = []

    def counting(batch, options, cancelled, target_prefix=None):
        batches.append(len(batch))
        return search(batch, options, cancelled, target_prefix)

    async def scenario():
        batcher = Batcher(counting, max_batch_size=8, max_wait=0.05)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([text], SearchOptions()) for text in texts))
        await batcher.stop()
        return [r[0] for r in results]

    batched = asyncio.run(scenario())
    assert sum(batches) == len(texts) and len(batches) < len(texts)
    assert [r.token_ids for r in batched] == [translator.translate([t])[0].token_ids for t in texts]



def test_parallel_workers_give_the_same_translations(translator):
    texts = (SENTENCES + ["A dog runs.", "Ein Mann fährt Fahrrad.", "", "Three people sit on a bench."]) * 3
    sequential = Translator(EN_DE / "onnx", workers=1).translate(texts, beam_size=4, batch_size=3)
    parallel = Translator(EN_DE / "onnx", workers=2).translate(texts, beam_size=4, batch_size=3)
    assert [r.token_ids for r in parallel] == [r.token_ids for r in sequential]
    assert [r.text for r in parallel] == [r.text for r in translator.translate(texts, beam_size=4)]


def test_beam_steps_keep_cross_attention_arrays_and_dropped_sentences_copy_them(translator):
    backend = translator.backend
    state = backend.start(pad_batch([[5, 6, 2], [7, 2]], 0))
    grown = backend.reorder(state, np.array([0, 0, 0, 1, 1, 1]))  # two sentences, three beams each
    assert grown.sentences.tolist() == [0, 0, 0, 1, 1, 1] and grown.cross_keys[0].shape[0] == 6
    _, _, stepped = backend.step(np.array([5, 6, 7, 5, 6, 7]), grown, 4)
    shuffled = backend.reorder(stepped, np.array([2, 0, 0, 4, 5, 3]))  # beams move within their sentence
    assert shuffled.cross_keys[0] is stepped.cross_keys[0]  # no copy
    np.testing.assert_array_equal(shuffled.self_keys[0][0], stepped.self_keys[0][2])
    dropped = backend.reorder(stepped, np.array([3, 4, 5]))  # sentence 0 finished
    assert dropped.sentences.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(dropped.cross_keys[1], stepped.cross_keys[1][3:])
    np.testing.assert_array_equal(dropped.source_mask, stepped.source_mask[3:])
