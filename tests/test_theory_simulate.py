"""Toy superposition simulations and the theory_sweep binary (tiny sizes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from theory import simulate as sim


def test_planted_features_recovered_when_n_ge_f():
  cfg = sim.SimConfig(num_features=8, budgets=(8, 12), num_seeds=2, steps=3000,
                      batch_size=256, learning_rate=1e-2, probe_size=2048, bootstrap=0)
  probe = np.asarray(sim.sample_features(sim.jax.random.PRNGKey(1), 2048, 8, 0.05))
  out = sim.run_budget(cfg, 8, probe)
  for acts in out["acts"]:
    best = sim._corr(acts, probe).max(axis=0)          # [F]: best neuron per feature
    assert np.all(best > 0.95), best                  # every feature has its own neuron
  assert out["dedicated"] == [8, 8]
  # both seeds learned the same features, so the matcher pairs all their neurons.
  assert out["rosetta"][(0, 1)] == 8
  assert out["selectivity_rosetta"] > 0.95


def test_rosetta_counts_use_project_matcher_and_agree_with_reference():
  rng = np.random.default_rng(0)
  base = rng.standard_normal((500, 6))
  a = np.concatenate([base, rng.standard_normal((500, 3))], 1)
  b = np.concatenate([base[:, ::-1] + 0.1 * rng.standard_normal((500, 6)),
                      rng.standard_normal((500, 2))], 1)
  acts = np.stack([a[:, :8], b[:, :8]])
  got = sim.rosetta_counts(acts, r_min=0.5)[(0, 1)]

  def reference(x, y, r_min):   # private NumPy best-buddies
    c = sim._corr(x, y)
    ia = np.arange(c.shape[0])
    jb = c.argmax(1)
    keep = (c.argmax(0)[jb] == ia) & (c[ia, jb] >= r_min)
    return ia[keep], jb[keep], c[ia, jb][keep]
  want = sim.rosetta_counts(acts, r_min=0.5, matcher=reference)[(0, 1)]
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_allclose(got[2], want[2], atol=1e-5)
  assert len(got[0]) == 6 and np.all(got[1] == 5 - got[0])


def test_log_log_slope_and_config_errors():
  assert sim.log_log_slope([2, 4, 8], [3, 6, 12]) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="> 0"):
    sim.log_log_slope([2, 4], [0, 3])
  with pytest.raises(ValueError, match="num_seeds"):
    sim.SimConfig(num_seeds=1).validate()
  with pytest.raises(ValueError, match="budgets"):
    sim.SimConfig(budgets=(4,)).validate()


@pytest.mark.slow   # 30 s; the theory study runs end to end in test_reproduce_studies
def test_theory_sweep_smoke(tmp_path):
  measured = tmp_path / "scaling.json"
  measured.write_text(json.dumps({"fit": {"count": {"beta": 0.8, "ci": [0.7, 0.9]}}}))
  work = tmp_path / "w"
  cmd = [sys.executable, "-m", "experiments.theory_sweep", f"--workdir={work}",
         "--alpha=1.1", "--num_features=12", "--budgets=3,6,12", "--num_seeds=2",
         "--steps=200", "--batch_size=128", "--probe_size=512", "--bootstrap=4",
         f"--measured={measured}"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  res = json.loads((work / "results.json").read_text())
  assert [r["source"][:4] for r in res["table"]] == ["pred", "pred", "simu", "meas"]
  assert res["measured"]["beta"] == 0.8
  assert res["simulated"]["budgets"] == [3, 6, 12]
  assert all(c > 0 for c in res["simulated"]["rosetta_mean"])
  assert np.isfinite(res["simulated"]["beta_sim"])
  assert np.isfinite(res["predicted"]["beta_rosetta"])
  assert (work / "config.json").exists()
  html = (work / "report.html").read_text()
  assert "plotly" in html.lower() and len(html) > 1_000_000   # plotly.js inlined
  bad = subprocess.run(cmd[:4] + ["--budgets=4"], cwd=root, capture_output=True, text=True)
  assert bad.returncode != 0 and "--budgets" in bad.stderr
  bad = subprocess.run(cmd[:-1] + [f"--measured={tmp_path / 'missing.json'}"], cwd=root,
                       capture_output=True, text=True)
  assert bad.returncode != 0 and "missing.json" in bad.stderr


def test_zipf_activity_and_sampling_frequencies():
  cfg = sim.ZOO_PRESETS["zoo_smoke"]
  p = sim.activity(cfg)
  assert p.mean() == pytest.approx(cfg.feature_prob, rel=1e-5)
  f = np.arange(1, cfg.num_features + 1)
  np.testing.assert_allclose(p[0] / p, f ** cfg.prob_alpha, rtol=1e-4)
  x = np.asarray(sim.sample_features(sim.jax.random.PRNGKey(3), 20000, cfg.num_features,
                                     sim.jnp.asarray(p)))
  freq = (x > 0).mean(0)
  sd = np.sqrt(p * (1 - p) / 20000)
  assert np.all(np.abs(freq - p) < 5 * sd + 1e-4)


def test_zoo_smoke_sweep_resumes_budget_by_budget(tmp_path, monkeypatch):
  cfg = sim.ZOO_PRESETS["zoo_smoke"]
  res = sim.run_sweep(cfg, log=lambda *_: None, cache_dir=str(tmp_path))
  assert res["budgets"] == [16, 32]
  assert all(0 < r <= n for r, n in zip(res["rosetta_mean"], res["budgets"]))
  assert np.isfinite(res["beta_sim"])
  assert sorted(os.listdir(tmp_path)) == ["budget_16.json", "budget_16.npz",
                                          "budget_32.json", "budget_32.npz"]
  def boom(*a, **k):
    raise AssertionError("a cached budget was retrained")
  monkeypatch.setattr(sim, "run_budget", boom)
  again = sim.run_sweep(cfg, log=lambda *_: None, cache_dir=str(tmp_path))
  assert again["rosetta_mean"] == res["rosetta_mean"] and again["beta_sim"] == res["beta_sim"]


def test_declared_criterion_keeps_planted_pairs_and_drops_chance_ones():
  # Two "seeds" share 6 planted signals (in another order, with noise) and each has 20
  # neurons of its own: the mutual nearest neighbours include chance pairs among the
  # 20 + 20, which the FDR threshold against probe-row permutations must drop (at
  # q = 0.05 it may keep one: 5% of ~7 pairs is 0.35 expected).
  rng = np.random.default_rng(0)
  base = rng.standard_normal((2000, 6))
  a = np.concatenate([base + 0.5 * rng.standard_normal((2000, 6)),
                      rng.standard_normal((2000, 20))], 1)
  b = np.concatenate([base[:, ::-1] + 0.5 * rng.standard_normal((2000, 6)),
                      rng.standard_normal((2000, 20))], 1)
  acts = np.stack([a, b]).astype(np.float32)
  raw = sim.rosetta_counts(acts, r_min=-1.0)
  ia, ib, r = raw[(0, 1)]
  planted = ia < 6
  assert planted.sum() == 6 and np.all(ib[planted] == 5 - ia[planted])
  assert (~planted).sum() >= 4                            # chance pairs among the others
  cfg = sim.SimConfig(r_min=-1.0, null_permutations=8, fdr_q=0.05)
  thr = sim.declared_thresholds(acts, raw, cfg, seed=0)[(0, 1)]
  assert thr <= r[planted].min() and (r[~planted] >= thr).sum() <= 1
  none = sim.declared_thresholds(acts, raw, sim.SimConfig(r_min=-1.0), seed=0)[(0, 1)]
  assert none == -np.inf                                  # no null: r_min alone decides


def test_zoo_sweep_under_the_declared_criterion():
  import dataclasses
  cfg = dataclasses.replace(sim.ZOO_PRESETS["zoo_smoke"], r_min=-1.0, null_permutations=4)
  res = sim.run_sweep(cfg, log=lambda *_: None)
  raw = sim.run_sweep(dataclasses.replace(cfg, null_permutations=0), log=lambda *_: None)
  assert all(np.isfinite(t) and t > 0 for t in res["threshold_mean"])
  assert raw["threshold_mean"] == [None, None]
  # the criterion only removes pairs (here it keeps all: the smoke models' mutual pairs
  # all beat the null; the planted test above has the case where it must drop some).
  assert all(0 < c <= r for c, r in zip(res["rosetta_mean"], raw["rosetta_mean"]))
