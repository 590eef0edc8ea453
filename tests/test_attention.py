import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch

from core.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from core.model import sinusoidal_encoding


def test_sinusoidal_encoding_equals_the_formula():
    length, d_model = 50, 16
    encoding = sinusoidal_encoding(length, d_model)
    assert encoding.shape == (length, d_model)
    for pos in (0, 1, 7, 49):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert encoding[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert encoding[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_encoding_rejects_odd_width():
    with pytest.raises(ValueError):
        sinusoidal_encoding(4, 5)


def test_worked_three_token_example_matches_numpy():
    """The seed article's example: three tokens, one head, d_k = 3."""
    embeddings = np.array([[0.5, 0.1, 0.3], [0.2, 0.6, 0.1], [0.3, 0.4, 0.7]])
    positions = np.array([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.8]])
    x = embeddings + positions
    rng = np.random.default_rng(0)
    w_q, w_k, w_v = (rng.standard_normal((3, 3)) for _ in range(3))
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.T / np.sqrt(3)
    expected_weights = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)
    expected_output = expected_weights @ v

    output, weights = scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)))
    np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-12)
    np.testing.assert_allclose(output.numpy(), expected_output, rtol=1e-12)


def test_rows_sum_to_one_and_masked_keys_get_zero_weight():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    mask[1, ..., 1] = False
    output, weights = scaled_dot_product_attention(q, k, v, mask)
    assert output.shape == (2, 3, 5, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert torch.all(weights[0, ..., 4:] == 0)
    assert torch.all(weights[1, ..., 1] == 0)
    assert torch.all(weights[0, ..., :4] > 0)


def test_masked_keys_do_not_influence_the_output():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    mask = torch.tensor([True, True, True, False, False]).view(1, 1, 1, 5)
    changed_k, changed_v = k.clone(), v.clone()
    changed_k[..., 3:, :] = 100.0
    changed_v[..., 3:, :] = -100.0
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, mask)[0], scaled_dot_product_attention(q, changed_k, changed_v, mask)[0]
    )


def test_causal_mask():
    assert causal_mask(3, 3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # with 2 cached positions, the single new query sees everything up to itself
    assert causal_mask(1, 3).tolist() == [[True, True, True]]
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]


def test_causal_attention_ignores_the_future():
    torch.manual_seed(2)
    attention = MultiHeadAttention(d_model=8, n_heads=2).eval()
    x = torch.randn(1, 5, 8)
    keys, values = attention.project_key_value(x)
    output, weights = attention(x, keys, values, causal_mask(5, 5))
    assert torch.all(weights.triu(diagonal=1) == 0)
    changed = x.clone()
    changed[:, 3:] += 10.0
    keys, values = attention.project_key_value(changed)
    changed_output, _ = attention(changed, keys, values, causal_mask(5, 5))
    torch.testing.assert_close(output[:, :3], changed_output[:, :3])


def test_multi_head_attention_is_concat_of_heads_times_w_o():
    torch.manual_seed(3)
    attention = MultiHeadAttention(d_model=8, n_heads=2).eval()
    x = torch.randn(1, 4, 8)
    keys, values = attention.project_key_value(x)
    output, weights = attention(x, keys, values)
    assert weights.shape == (1, 2, 4, 4)
    heads = []
    for head in range(2):
        part = slice(4 * head, 4 * head + 4)
        q = x @ attention.w_q.weight[part].T + attention.w_q.bias[part]
        k = x @ attention.w_k.weight[part].T + attention.w_k.bias[part]
        v = x @ attention.w_v.weight[part].T + attention.w_v.bias[part]
        heads.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1) @ v)
    expected = torch.cat(heads, dim=-1) @ attention.w_o.weight.T + attention.w_o.bias
    torch.testing.assert_close(output, expected)
