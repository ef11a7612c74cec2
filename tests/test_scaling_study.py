"""End-to-end smoke test of the scaling study on a micro zoo, and its input errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rosetta_jax.studies import common, scaling as study
from rosetta_jax.zoo import config

MICRO = config.StudyConfig(
    zoo=config.ZooConfig(widths=(16, 32, 64), num_layers=1, vocab_size=400, seq_len=32,
                         batch_size=8, steps=40, warmup=5, ckpt_every=20),
    record_docs=60, record_chars=400, record_len=32, bootstrap=30, candidates=4)


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
  assert res["sizes"] == [64.0, 128.0, 256.0]            # 1 layer x 4 * width neurons
  counts = np.array(res["counts"])
  assert np.all(counts > 0) and np.all(counts <= np.array(res["sizes"]))
  fit = res["fit"]["count"]
  assert np.isfinite(fit["beta"]) and fit["ci"][0] <= fit["beta"] <= fit["ci"][1]
  for p in res["pairs"]:
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


def test_binary_rejects_unknown_preset(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.scaling", "--preset=huge",
                        f"--workdir={tmp_path}"], capture_output=True, text=True)
  assert out.returncode != 0 and "huge" in out.stderr
  assert not os.listdir(tmp_path)
