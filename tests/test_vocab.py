"""Vocabulary projection (analysis/vocab.py) vs NumPy on the Hugging Face weights.

One family per final-norm style: GPT-NeoX (LayerNorm with a scale: centred, then
scaled) and Llama (RMSNorm: scaled only), plus GPT-2 (tied) and OPT (a projection
before the tied unembedding). The reference reads the PyTorch state dict by its
Hugging Face names, so a wrong parameter path, a dropped norm scale or a missing
centring in our implementation shows up as a logit difference.
"""

import numpy as np
import pytest
import transformers

from load_helpers import randomize
from rosetta_jax.analysis import vocab
from rosetta_jax.models import load_model

K = 7


def _kurt_skew(x):
  d = x - x.mean(axis=1, keepdims=True)
  m2, m3, m4 = (np.mean(d ** p, axis=1) for p in (2, 3, 4))
  return m3 / m2 ** 1.5, m4 / m2 ** 2 - 3


def _gpt_neox(tied):
  cfg = transformers.GPTNeoXConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=72,
                                   max_position_embeddings=64, tie_word_embeddings=tied)
  hf = randomize(transformers.GPTNeoXForCausalLM(cfg), seed=4)
  sd = {k: v.detach().numpy().astype(np.float64) for k, v in hf.state_dict().items()}
  w_u = sd["gpt_neox.embed_in.weight"] if tied else sd["lm_head.weight"]      # [V, d]
  g = sd["gpt_neox.final_layer_norm.weight"]

  def ref(layer):
    w = sd[f"gpt_neox.layers.{layer}.mlp.dense_4h_to_h.weight"].T              # [N, d]
    w = w - w.mean(axis=1, keepdims=True)                                       # LayerNorm
    return (w * g) @ w_u.T
  return hf, ref


def _llama(tied):
  cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=80, max_position_embeddings=64,
                                 tie_word_embeddings=tied)
  hf = randomize(transformers.LlamaForCausalLM(cfg), seed=5)
  sd = {k: v.detach().numpy().astype(np.float64) for k, v in hf.state_dict().items()}
  w_u = sd["model.embed_tokens.weight"] if tied else sd["lm_head.weight"]
  g = sd["model.norm.weight"]

  def ref(layer):
    w = sd[f"model.layers.{layer}.mlp.down_proj.weight"].T       # RMSNorm: no centring
    return (w * g) @ w_u.T
  return hf, ref


def _gpt2(_):
  cfg = transformers.GPT2Config(vocab_size=89, n_embd=32, n_layer=2, n_head=4, n_positions=64)
  hf = randomize(transformers.GPT2LMHeadModel(cfg), seed=6)
  sd = {k: v.detach().numpy().astype(np.float64) for k, v in hf.state_dict().items()}

  def ref(layer):
    w = sd[f"transformer.h.{layer}.mlp.c_proj.weight"]                         # Conv1D: [N, d]
    w = w - w.mean(axis=1, keepdims=True)
    return (w * sd["transformer.ln_f.weight"]) @ sd["transformer.wte.weight"].T
  return hf, ref


def _opt(_):
  cfg = transformers.OPTConfig(vocab_size=91, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, ffn_dim=64, max_position_embeddings=64,
                               word_embed_proj_dim=16)
  hf = randomize(transformers.OPTForCausalLM(cfg), seed=7)
  sd = {k: v.detach().numpy().astype(np.float64) for k, v in hf.state_dict().items()}

  def ref(layer):
    w = sd[f"model.decoder.layers.{layer}.fc2.weight"].T
    w = w - w.mean(axis=1, keepdims=True)
    h = (w * sd["model.decoder.final_layer_norm.weight"]) @ sd["model.decoder.project_out.weight"].T
    return h @ sd["model.decoder.embed_tokens.weight"].T
  return hf, ref


@pytest.mark.parametrize("family,tied", [("gpt_neox", False), ("gpt_neox", True),
                                         ("llama", False), ("llama", True),
                                         ("gpt2", True), ("opt", True)])
def test_matches_numpy_on_hf_weights(tmp_path, family, tied):
  hf, ref = {"gpt_neox": _gpt_neox, "llama": _llama, "gpt2": _gpt2, "opt": _opt}[family](tied)
  hf.save_pretrained(tmp_path)
  model = load_model(tmp_path)
  model.tokenizer = None                     # no tokenizer files: ids only
  out = vocab.vocab_projection(model, k=K, block=24)   # several blocks per layer
  assert sorted(out) == model.mlp_sites()
  w_u = np.asarray(vocab.readout_matrix(model), np.float64)
  for layer, site in enumerate(model.mlp_sites()):
    logits = ref(layer)                                   # [N, V]
    p = out[site]
    assert p.num_neurons == logits.shape[0]
    order = np.argsort(-logits, axis=1, kind="stable")
    np.testing.assert_array_equal(p.top_ids, order[:, :K])
    np.testing.assert_array_equal(p.bottom_ids, order[:, ::-1][:, :K])
    np.testing.assert_allclose(p.top_logits, np.take_along_axis(logits, order[:, :K], 1),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.bottom_logits,
                               np.take_along_axis(logits, order[:, ::-1][:, :K], 1),
                               rtol=1e-5, atol=1e-5)
    skew, kurt = _kurt_skew(logits)
    np.testing.assert_allclose(p.skew, skew, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.kurtosis, kurt, rtol=1e-4, atol=1e-4)
    assert np.abs(logits).max() > 1e-2          # non-trivial projections
  assert w_u.shape[1] == hf.config.vocab_size


def test_vocab_size_cut_and_decoded_tokens():
  """A padded embedding (model vocab > tokenizer vocab): padded ids never count, and
  the strings are the tokenizer's decodings of the ids."""
  import jax
  from rosetta_jax.data.tokenizer import train_bpe
  from rosetta_jax.models.base import Model
  from rosetta_jax.models.gpt_neox import GPTNeoX, GPTNeoXConfig
  tok = train_bpe(["the cat sat on the mat", "def f(x): return x + 1"] * 20, vocab_size=280)
  cfg = GPTNeoXConfig(vocab_size=tok.vocab_size + 37, hidden_size=32, num_layers=2,
                      num_heads=4, intermediate_size=40, max_position_embeddings=64)
  module = GPTNeoX(cfg)
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 4), np.int32))["params"]
  # Make the padded rows dominate: without the cut they would be every top token.
  pad = np.random.default_rng(0).normal(size=(32, 37)) * 5.0
  params["embed_out"]["kernel"] = params["embed_out"]["kernel"].at[:, tok.vocab_size:].set(pad)
  model = Model("tiny", module, params, cfg, tok)
  out = vocab.vocab_projection(model, k=5)
  for p in out.values():
    assert p.top_ids.max() < tok.vocab_size and p.bottom_ids.max() < tok.vocab_size
    assert p.top_tokens.shape == p.top_ids.shape
    assert all(p.top_tokens[i, j] == tok.decode([int(p.top_ids[i, j])])
               for i in range(3) for j in range(5))
    card = p.neuron(2)
    assert [t[1] for t in card["top"]] == p.top_ids[2].tolist()
    assert card["top"][0][0] == p.top_tokens[2, 0]
  full = vocab.vocab_projection(model, k=5, vocab_size=cfg.vocab_size, decode=False)
  assert (full["layer_0/mlp"].top_ids >= tok.vocab_size).all()
  assert (full["layer_0/mlp"].bottom_ids >= tok.vocab_size).all()
  assert full["layer_0/mlp"].top_tokens.size == 0
  assert full["layer_0/mlp"].neuron(0)["top"][0][0].startswith("#")


def test_encoder_is_rejected():
  cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=40)

  class Fake:
    name = "bert"
  from rosetta_jax.models import bert
  fake = Fake()
  fake.config = bert.BertConfig.from_hf(cfg)
  with pytest.raises(ValueError, match="encoder"):
    vocab.readout_of(fake)
