"""Shared helpers for the Hugging Face parity tests (tiny random PyTorch models)."""

from __future__ import annotations

import numpy as np
import torch

TOL = 1e-4  # whole-model parity, float32: max |ours - HF| over non-pad positions


def randomize(model, seed: int = 0, scale: float = 0.1, norm_center: float = 1.0):
  """Replaces every parameter with seeded noise (norm scales around ``norm_center``).

  Hugging Face's default init leaves norms at 1/0 and biases at 0, which would hide
  a swapped norm or a dropped bias; random values expose them. Gemma stores its
  norm scales as offsets from 1: pass ``norm_center=0``.
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g) * scale
      is_scale = "norm" in name.lower() and name.endswith("weight") or name.endswith("ln_1.weight") \
          or name.endswith("ln_2.weight") or name.endswith("ln_f.weight")
      p.copy_(noise + (norm_center if is_scale else 0.0))
  return model.eval()


def padded_batch(vocab: int, seed: int = 0):
  """tokens [3, 7] and a mask: full row, right-padded row, left-padded row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab, size=(3, 7)).astype(np.int64)
  mask = np.ones((3, 7), np.int64)
  mask[1, 5:] = 0
  mask[2, :2] = 0
  tokens[mask == 0] = 1
  return tokens, mask


def hf_forward(model, down_projections, tokens, mask, encoder: bool = False):
  """Runs the PyTorch model; returns (logits or hidden, [mlp neurons per layer]).

  The neurons are the inputs of each layer's MLP down-projection, captured with
  forward pre-hooks on ``down_projections`` (one module per layer).
  """
  captured = [None] * len(down_projections)
  hooks = []
  for i, mod in enumerate(down_projections):
    def hook(_, args, i=i):
      # OPT runs its MLP on [batch * seq, width]: restore [batch, seq, width].
      captured[i] = args[0].detach().numpy().reshape(*np.shape(tokens), -1)
    hooks.append(mod.register_forward_pre_hook(hook))
  try:
    with torch.no_grad():
      out = model(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask))
  finally:
    for h in hooks:
      h.remove()
  main = out.last_hidden_state if encoder else out.logits
  return main.detach().numpy(), captured


def max_diff(a, b, mask) -> float:
  """max |a - b| over the positions where mask is 1."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b)[np.asarray(mask, bool)].max())


def assert_parity(ours, model, down_projections, tokens, mask, encoder=False):
  """Our model's logits and every ``layer_{i}/mlp`` site match the HF model to TOL."""
  ref_main, ref_neurons = hf_forward(model, down_projections, tokens, mask, encoder)
  sites = ours.mlp_sites()
  main, acts = ours(tokens, mask, sites=sites)
  diffs = {"logits": max_diff(main, ref_main, mask)}
  for i, site in enumerate(sites):
    diffs[site] = max_diff(acts[site], ref_neurons[i], mask)
  bad = {k: v for k, v in diffs.items() if not v <= TOL}
  assert not bad, f"parity beyond {TOL}: {bad}"
  # Non-trivial activations: the comparison is not between near-zero arrays.
  assert np.abs(ref_main).max() > 1e-2
  return diffs
