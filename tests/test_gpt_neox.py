"""GPT-NeoX module: shapes, causality, padding, sites."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rosetta_jax.models import gpt_neox

CFG = gpt_neox.GPTNeoXConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope="module")
def params():
  return gpt_neox.GPTNeoX(CFG).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]


def apply(params, tokens, mask=None, sites=()):
  return gpt_neox.GPTNeoX(CFG).apply({"params": params}, jnp.asarray(tokens), mask, sites=sites)


def test_shapes_and_sites(params):
  tokens = np.arange(2 * 7).reshape(2, 7) % 50
  logits, out = apply(params, tokens, sites=("layer_0/mlp", "layer_1/resid"))
  assert logits.shape == (2, 7, 50)
  assert out["layer_0/mlp"].shape == (2, 7, 64)
  assert out["layer_1/resid"].shape == (2, 7, 32)
  assert set(out) == {"layer_0/mlp", "layer_1/resid"}
  _, none = apply(params, tokens)
  assert none == {}


def test_causal_mask(params):
  rng = np.random.default_rng(0)
  a = rng.integers(0, 50, (1, 10))
  b = a.copy()
  b[0, 6:] = (b[0, 6:] + 7) % 50          # change the future only
  la, sa = apply(params, a, sites=("layer_1/mlp",))
  lb, sb = apply(params, b, sites=("layer_1/mlp",))
  np.testing.assert_allclose(la[0, :6], lb[0, :6], atol=1e-6)
  np.testing.assert_allclose(sa["layer_1/mlp"][0, :6], sb["layer_1/mlp"][0, :6], atol=1e-6)
  assert np.abs(np.asarray(la[0, 6:] - lb[0, 6:])).max() > 1e-3


def test_right_padding_does_not_change_real_tokens(params):
  tokens = np.array([[5, 6, 7, 8, 9, 10]])
  padded = np.array([[5, 6, 7, 8, 9, 10, 0, 0, 0]])
  mask = np.array([[1] * 6 + [0] * 3])
  l1, _ = apply(params, tokens)
  l2, _ = apply(params, padded, jnp.asarray(mask))
  np.testing.assert_allclose(l1[0], l2[0, :6], atol=1e-5)


def test_bad_sites(params):
  with pytest.raises(ValueError, match="out of range"):
    apply(params, np.zeros((1, 3), int), sites=("layer_5/mlp",))
  with pytest.raises(ValueError, match="unknown site"):
    apply(params, np.zeros((1, 3), int), sites=("mlp_0",))


def test_config_validates_heads():
  with pytest.raises(ValueError, match="divisible"):
    gpt_neox.GPTNeoXConfig(hidden_size=30, num_heads=4)
