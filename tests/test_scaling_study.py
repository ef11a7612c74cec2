"""End-to-end smoke test of the scaling study on a micro zoo, and its input errors."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rosetta_jax.studies import common, scaling as study
from rosetta_jax.zoo import config

MICRO = config.StudyConfig(
    zoo=config.ZooConfig(widths=(16, 32, 48), num_layers=1, vocab_size=400, seq_len=64,
                         batch_size=16, steps=300, warmup=20, ckpt_every=150),
    record_docs=120, record_chars=400, record_len=64, bootstrap=30, candidates=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study"))
  return workdir, study.run_scaling(MICRO, workdir, "zoo", progress=False)


def test_outputs_exist_and_are_sane(run):
  workdir, res = run
  for name in ("config.json", "results.json", "report.html"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "results.json")) as f:
    disk = json.load(f)
  assert disk["counts"] == res["counts"]
  assert res["sizes"] == [64.0, 128.0, 192.0]            # 1 layer x 4 * width neurons
  counts = np.array(res["counts"])
  assert np.all(counts > 0) and np.all(counts <= np.array(res["sizes"]))
  fit = res["fit"]["count"]
  assert np.isfinite(fit["beta"]) and fit["ci"][0] <= fit["beta"] <= fit["ci"][1]
  # Under the permutation null the best pairs are far weaker than real Rosetta pairs,
  # and no counted pair is weaker than the null's best.
  for p in res["pairs"]:
    assert p["null_count"] > 0 and np.mean(p["r"]) > 3 * p["null_r_max"], p
    assert min(p["r"]) > p["null_r_max"] and p["count"] <= p["raw_count"]
    r = np.array(p["r"])
    assert len(r) == p["count"] and np.all((r > -1) & (r <= 1 + 1e-6))
    assert p["count_ci"][0] <= p["count_ci"][1]
    assert any(f.startswith(p["label"]) and f.endswith(".tsv")
               for f in os.listdir(os.path.join(workdir, "pairs")))
  html = open(os.path.join(workdir, "report.html")).read()
  assert html.count("Plotly.newPlot") >= 4 and "beta" in html


def test_rerun_resumes_and_reuses(run):
  workdir, res = run
  again = study.run_scaling(MICRO, workdir, "zoo", progress=False)
  assert again["counts"] == res["counts"]
  assert again["seconds"]["models"] < res["seconds"]["models"]


def test_workdir_with_other_config_is_refused(run):
  workdir, _ = run
  other = config.StudyConfig(zoo=MICRO.zoo, bootstrap=31)
  with pytest.raises(ValueError, match="different configuration"):
    study.run_scaling(other, workdir, "zoo", progress=False)


def test_bad_models_spec(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    common.resolve_models(" ", MICRO, str(tmp_path))


@pytest.mark.parametrize("flag,message", [
    ("--preset=huge", "huge"), ("--bootstrap=1", "--bootstrap must be >= 2"),
    ("--record_len=0", "--record_len and --record_batch must be >= 1"),
    ("--record_docs=-3", "--record_docs and --record_chars must be >= 0"),
    ("--depths=0,1.5", "--depths must be numbers in [0, 1]"),
    ("--depths=mid", "--depths must be numbers in [0, 1]"),
    ("--null_fdr=1.5", "--null_fdr must lie in (0, 1)")])
def test_binary_rejects_bad_flags(tmp_path, flag, message):
  out = subprocess.run([sys.executable, "-m", "experiments.scaling", flag,
                        f"--workdir={tmp_path}"], capture_output=True, text=True)
  assert out.returncode != 0 and message in out.stderr
  assert not os.listdir(tmp_path)


def test_unknown_model_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no_such_model_dir"):
    common.resolve_models("no_such_model_dir,other", MICRO, str(tmp_path))


def test_hf_checkpoint_dirs_end_to_end(tmp_path):
  """--models=DIR_A,DIR_B,DIR_C on tiny random HF checkpoints (issue 4's path)."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # pylint: disable=g-import-not-at-top
  from rosetta_jax.data import corpus, tokenizer  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  tok = tokenizer.train_bpe([d.text for d in corpus.load_corpus("train")[:50]], 300)
  dirs = []
  for i, width in enumerate((32, 48, 64)):
    torch.manual_seed(i)
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=300, hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=2 * width, max_position_embeddings=64)).eval()
    d = tmp_path / f"neox{width}"
    hf.save_pretrained(d)
    PreTrainedTokenizerFast(tokenizer_object=tok.backend).save_pretrained(d)
    dirs.append(str(d))
  cfg = config.StudyConfig(zoo=MICRO.zoo, record_docs=20, record_chars=200, record_len=64,
                           bootstrap=10, candidates=4)
  res = study.run_scaling(cfg, str(tmp_path / "run"), ",".join(dirs), progress=False)
  assert [p["label"] for p in res["pairs"]] == ["neox32~neox48", "neox32~neox64", "neox48~neox64"]
  assert res["sizes"] == pytest.approx([np.sqrt(128 * 192), np.sqrt(128 * 256), np.sqrt(192 * 256)])
  assert np.isfinite(res["fit"]["count"]["beta"]) and min(res["counts"]) > 0
  assert os.path.exists(tmp_path / "run" / "report.html")
  # Anchors: every pair of the three matched, so each model's anchor set is the
  # intersection of its pair members, recomputed here from the pair tables.
  members = {}
  for p, (x, y) in zip(res["pairs"], [(0, 1), (0, 2), (1, 2)]):
    tsv = np.genfromtxt(tmp_path / "run" / "pairs" / p["cache"].replace(".json", ".tsv"),
                        dtype=None, names=True, encoding="utf-8")
    tsv = np.atleast_1d(tsv)
    layer_a = np.array([int(s.split("_")[1].split("/")[0]) for s in tsv["site_a"]])
    layer_b = np.array([int(s.split("_")[1].split("/")[0]) for s in tsv["site_b"]])
    npl = {0: 128, 1: 192, 2: 256}
    members.setdefault(x, []).append(set(layer_a * npl[x] // 2 + tsv["neuron_a"]))
    members.setdefault(y, []).append(set(layer_b * npl[y] // 2 + tsv["neuron_b"]))
  anchors = res["anchors"]
  assert len(anchors) == 3
  for i, d in enumerate(dirs):
    a = next(v for k, v in anchors.items() if k.endswith(os.path.basename(d)))
    assert a["count"] == len(members[i][0] & members[i][1])
    assert a["partners"] == 2 and len(a["count_ci"]) == 2 and a["count_ci"][0] <= a["count_ci"][1]
    assert len(a["layer_density"]) == 2
    assert sum(a["layer_density"]) * (128 + 64 * i) // 2 == pytest.approx(a["count"])
  assert "Anchors" in open(tmp_path / "run" / "report.html").read()
  # Depth-selected layers: only the last layer of each model is recorded and matched.
  last = dataclasses.replace(cfg, depths=(1.0,), null_fdr=0.2)
  res = study.run_scaling(last, str(tmp_path / "last"), ",".join(dirs), progress=False)
  for p in res["pairs"]:               # the FDR rule: never stricter than the max-null rule
    assert "fdr0.2" in p["cache"] and p["count"] <= p["raw_count"]
    assert p["count"] == 0 or p["r_threshold"] <= p["null_r_max"] + 1e-6
    assert p["count"] >= p["count_above_null_max"]
  assert [m["sites"] for m in res["model_info"]] == [["layer_1/mlp"]] * 3
  assert [m["neurons"] for m in res["model_info"]] == [64, 96, 128]
  assert all(p["depth_a"] == [0.75] and p["num_layers_a"] == 1 for p in res["pairs"])
  assert all(len(a["layer_density"]) == 1 for a in res["anchors"].values())


def test_select_depths_maps_relative_depth_to_nearest_layer(tmp_path):
  from rosetta_jax.models import base  # pylint: disable=g-import-not-at-top
  m = lambda n: base.Model("m", None, None, config.ZooConfig(num_layers=n).model_config(16))
  assert m(30).select_depths((0, 0.5, 1)).mlp_sites() == [
      "layer_0/mlp", "layer_15/mlp", "layer_29/mlp"]        # 14.5 rounds half up
  assert m(24).select_depths((0.5, 0.51)).studied_layers == (12,)   # duplicates collapse
  small = m(2)
  assert small.select_depths(()).mlp_sites() == ["layer_0/mlp", "layer_1/mlp"]
  assert small.num_neurons == 2 * small.neurons_per_layer
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    m(4).select_depths((1.2,))


def test_workdir_made_before_a_later_field_still_matches(tmp_path):
  cfg = config.to_dict(MICRO)
  old = {k: v for k, v in cfg.items() if k != "depths"}
  common.write_json(str(tmp_path / "config.json"), {"study": "scaling", "config": old})
  common.prepare_workdir(str(tmp_path), {"study": "scaling", "config": cfg})
  with pytest.raises(ValueError, match="different configuration"):
    common.prepare_workdir(str(tmp_path), {"study": "scaling",
                                           "config": {**cfg, "depths": [0.5]}})


def test_count_ci_is_the_basic_bootstrap_interval():
  from rosetta_jax.studies.scaling import count_ci  # pylint: disable=g-import-not-at-top
  boot = np.arange(100, 141)                 # resamples biased upward of the count 100
  lo, hi = count_ci(100, boot)
  assert hi == pytest.approx(200 - np.quantile(boot, 0.025))
  assert lo == pytest.approx(200 - np.quantile(boot, 0.975))
  assert lo < 100 and count_ci(1, np.array([5, 6, 7]))[0] == 0.0


def test_fdr_threshold_keeps_what_the_null_cannot_explain():
  from rosetta_jax.analysis.null import fdr_threshold  # pylint: disable=g-import-not-at-top
  real = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
  null = np.array([0.97, 0.55, 0.45, 0.42, 0.41])
  # At 0.6: 1 null / 6 real = 0.17; at 0.5: 2 / 7; at 0.4: 5 / 8.
  assert fdr_threshold(real, null, 0.2) == 0.6
  assert fdr_threshold(real, null, 0.3) == 0.5
  # The max-null rule would keep only 0.99; a lone high null pair does not stop
  # the step-up rule (at 0.99 the rate is 0, at 0.95 it is 1/2).
  assert fdr_threshold(real, null, 0.01) == np.nextafter(0.97, 1)      # keeps 0.99 only
  assert fdr_threshold(real, null * 0.5, 0.01) == np.nextafter(0.485, 1)   # max-null: 0 null
  assert fdr_threshold(real, np.array([]), 0.05) == 0.4
  assert fdr_threshold(np.array([0.3]), np.array([0.5]), 0.05) > 0.3     # nothing kept
  with pytest.raises(ValueError, match="FDR"):
    fdr_threshold(real, null, 0.0)
