import json

import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch
import torch.nn.functional as F

from conftest import tiny_config
from core.config import TransformerConfig
from core.model import Transformer


def random_batch(config, batch=3, source_length=7, target_length=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    source = torch.randint(4, config.vocab_size, (batch, source_length), generator=generator)
    target = torch.randint(4, config.vocab_size, (batch, target_length), generator=generator)
    return source, target


@pytest.mark.parametrize("pre_norm", [False, True])
def test_padding_a_batch_does_not_change_any_sentence(pre_norm):
    config = tiny_config(pre_norm=pre_norm)
    model = Transformer(config).eval()
    source, target = random_batch(config, batch=1, source_length=5)
    alone = model(source, target)
    padded_source = torch.cat([source, torch.full((1, 4), config.pad_id)], dim=1)
    other_source, other_target = random_batch(config, batch=1, source_length=9, seed=1)
    batch = model(torch.cat([padded_source, other_source]), torch.cat([target, other_target]))
    torch.testing.assert_close(batch[:1], alone, atol=1e-5, rtol=1e-5)
    encoded = model.encode(torch.cat([padded_source, other_source]), output_attentions=True)
    assert torch.all(encoded.attentions[:, 0, :, :, 5:] == 0)  # nobody attends to padding


@pytest.mark.parametrize("pre_norm", [False, True])
def test_cached_decoding_equals_uncached(pre_norm):
    config = tiny_config(pre_norm=pre_norm)
    model = Transformer(config).eval()
    source, target = random_batch(config)
    source[0, 5:] = config.pad_id
    encoded = model.encode(source)
    full = model.decode(target, encoded.source_mask, model.start_cache(encoded.memory), output_attentions=True)
    cache = model.start_cache(encoded.memory)
    for position in range(target.size(1)):
        step = model.decode(target[:, position : position + 1], encoded.source_mask, cache, output_attentions=True)
        cache = step.cache
        torch.testing.assert_close(step.logits[:, 0], full.logits[:, position], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            step.self_attentions[..., 0, :], full.self_attentions[..., position, : position + 1], atol=1e-6, rtol=1e-5
        )
        torch.testing.assert_close(step.cross_attentions[..., 0, :], full.cross_attentions[..., position, :])
    assert cache.past_length == target.size(1)
    for step_keys, full_keys in zip(cache.self_keys, full.cache.self_keys, strict=True):
        torch.testing.assert_close(step_keys, full_keys, atol=1e-5, rtol=1e-5)


def test_attention_weights_have_documented_shapes():
    config = tiny_config()
    model = Transformer(config).eval()
    source, target = random_batch(config, batch=2, source_length=7, target_length=4)
    encoded = model.encode(source, output_attentions=True)
    assert encoded.attentions.shape == (2, 2, 2, 7, 7)  # layers, batch, heads, queries, keys
    output = model.decode(target, encoded.source_mask, model.start_cache(encoded.memory), output_attentions=True)
    assert output.logits.shape == (2, 4, config.vocab_size)
    assert output.self_attentions.shape == (2, 2, 2, 4, 4)
    assert output.cross_attentions.shape == (2, 2, 2, 4, 7)
    assert [keys.shape for keys in output.cache.self_keys] == [(2, 2, 4, config.d_head)] * 2  # one per layer
    assert model.decode(target, encoded.source_mask, model.start_cache(encoded.memory)).self_attentions is None


def test_cache_reorder_selects_rows():
    config = tiny_config()
    model = Transformer(config).eval()
    source, _ = random_batch(config)
    cache = model.start_cache(model.encode(source).memory)
    reordered = cache.reorder(torch.tensor([2, 2, 0]))
    for layer in range(config.n_decoder_layers):
        torch.testing.assert_close(reordered.cross_keys[layer][0], cache.cross_keys[layer][2])
        torch.testing.assert_close(reordered.cross_values[layer][2], cache.cross_values[layer][0])


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=20)
    model = Transformer(config)
    source = torch.randint(4, 20, (4, 6))
    target = torch.cat([torch.full((4, 1), config.bos_id), torch.randint(4, 20, (4, 6))], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        logits = model(source, target[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), target[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_save_and_load_round_trip(tmp_path):
    config = tiny_config(pre_norm=True)
    model = Transformer(config).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["pre_norm"] is True
    loaded = Transformer.from_pretrained(tmp_path)
    assert loaded.config == config
    source, target = random_batch(config)
    torch.testing.assert_close(loaded(source, target), model(source, target))


def test_loading_reports_missing_and_mismatched_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Transformer.from_pretrained(tmp_path)
    Transformer(tiny_config()).save_pretrained(tmp_path)
    tiny_config(d_model=32).save(tmp_path)
    with pytest.raises(ValueError, match="does not match"):
        Transformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Transformer.from_pretrained(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=10, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="unknown config keys"):
        TransformerConfig.from_dict({"vocab_size": 10, "d_modle": 16})
    with pytest.raises(ValueError, match="vocab_size must be int"):
        TransformerConfig(vocab_size="many")
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig(vocab_size=10, dropout=1.5)


def test_too_long_input_is_a_clear_error():
    config = tiny_config(max_positions=8)
    model = Transformer(config).eval()
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(torch.full((1, 9), 5))


def test_swish_and_the_output_bias_are_read_from_the_config(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(activation="swish", final_logits_bias=True)
    model = Transformer(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_()
    x = torch.randn(2, 3, config.d_model)
    feed_forward = model.encoder_layers[0].feed_forward
    torch.testing.assert_close(feed_forward(x), feed_forward.linear_out(F.silu(feed_forward.linear_in(x))))
    plain = Transformer(tiny_config(activation="swish")).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "final_logits_bias"})
    source, target = random_batch(config)
    torch.testing.assert_close(model(source, target), plain(source, target) + model.final_logits_bias)
    model.save_pretrained(tmp_path)
    loaded = Transformer.from_pretrained(tmp_path)
    assert loaded.config == config and torch.equal(loaded.final_logits_bias, model.final_logits_bias)
    torch.testing.assert_close(loaded(source, target), model(source, target))


def test_the_defaults_are_the_papers_model():
    config = TransformerConfig.from_dict({"vocab_size": 40, "d_model": 16, "n_heads": 2})  # a config.json of before
    assert (config.activation, config.final_logits_bias) == ("relu", False)
    model = Transformer(config)
    assert model.final_logits_bias is None and "final_logits_bias" not in model.state_dict()
    x = torch.randn(2, config.d_model)
    feed_forward = model.encoder_layers[0].feed_forward
    torch.testing.assert_close(feed_forward(x), feed_forward.linear_out(torch.relu(feed_forward.linear_in(x))))
    with pytest.raises(ValueError, match="activation must be one of relu, swish, got 'gelu'"):
        TransformerConfig(vocab_size=10, activation="gelu")
