"""Smoke tests of the polarization, domains, null/ablation and reproduce binaries.

One micro zoo is trained and recorded once (by ``experiments.reproduce``); the
other binaries then run on the same workdir, reusing the zoo, stores and pairs.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rosetta_jax.studies import common, polarization
from rosetta_jax.zoo import config

# Like test_scaling_study's MICRO, but a prefix of every held-out document, so all
# domains are present.
MICRO = config.StudyConfig(
    zoo=config.ZooConfig(widths=(16, 32, 64), num_layers=2, vocab_size=400, seq_len=32,
                         batch_size=8, steps=40, warmup=5, ckpt_every=20),
    record_docs=0, record_chars=60, record_len=32, bootstrap=20, candidates=4)


def _run(module, workdir, cfg_path, *extra):
  out = subprocess.run([sys.executable, "-m", f"experiments.{module}", f"--workdir={workdir}",
                        f"--config={cfg_path}", "--noprogress", *extra],
                       capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("studies"))
  cfg_path = os.path.join(wd, "micro.json")
  common.write_json(cfg_path, {"config": config.to_dict(MICRO)})
  # The theory comparison has its own tests (tests/test_theory_*); skipped here for time.
  stdout = {"reproduce": _run("reproduce", wd, cfg_path, "--skip_theory", "--skip_data_filter")}
  for module in ("polarization", "domains", "null_ablation"):
    stdout[module] = _run(module, wd, cfg_path)
  return wd, stdout


def _load(wd, study):
  with open(os.path.join(wd, study, "results.json")) as f:
    return json.load(f)


def _finite_numbers(x):
  if isinstance(x, dict):
    return [v for y in x.values() for v in _finite_numbers(y)]
  if isinstance(x, list):
    return [v for y in x for v in _finite_numbers(y)]
  return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def _figures(path):
  with open(path) as f:
    return f.read().count("Plotly.newPlot")


def test_polarization_outputs(workdir):
  wd, stdout = workdir
  res = _load(wd, "polarization")
  assert [e["label"] for e in res["per_size"]] == ["w16", "w32", "w64"]
  for e in res["per_size"]:
    assert e["rosetta"] > 0 and e["non_rosetta"] > e["rosetta"]
    for m in ("kurtosis", "hoyer", "frequency", "explanation"):
      x = e["metrics"][m]
      assert 0 <= x["auroc"] <= 1 and math.isfinite(x["d"])
      assert x["d_ci"][0] <= x["d"] + 1e-9 or x["d_ci"][1] >= x["d"] - 1e-9
      assert x["auroc_ci"][0] <= x["auroc_ci"][1]
  t = res["trend"]["kurtosis"]["d"]
  assert math.isfinite(t["slope"]) and t["ci"][0] <= t["ci"][1] and t["n_boot"] == 20
  assert _figures(os.path.join(wd, "polarization", "report.html")) >= 6
  assert "kurtosis" in stdout["polarization"]
  assert all(e["rosetta_rematched"] for e in res["per_size"])
  html = open(os.path.join(wd, "polarization", "report.html")).read()
  assert "Rosetta sets re-matched in every resample" in html


def test_bootstrap_rosetta_sets_are_rematched_per_resample(workdir):
  """The polarization/domains CIs use each resample's own Rosetta set."""
  wd, _ = workdir
  ctx = polarization.load_context(MICRO, wd, "zoo", progress=False)
  for pair in ctx.pairs:
    ma, mb, _ = polarization.rosetta_sets(ctx, pair)
    members = polarization.rosetta_members(ctx, pair)
    assert members.shape == (MICRO.bootstrap, len(ma) + len(mb))
    full = np.concatenate([ma, mb])
    # Resamples move the set (else the CI would ignore matching noise), but
    # mostly keep the full-data pairs.
    assert (members != full).any()
    assert (members & full).sum() > 0.5 * full.sum() * MICRO.bootstrap


def test_effect_sizes_accept_a_set_per_resample():
  from rosetta_jax.analysis import polarization as pol  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  v = rng.normal(size=(4, 50))
  masks = rng.random((4, 50)) < 0.3
  got = pol.effect_sizes(v, masks)
  for b in range(4):
    one = pol.effect_sizes(v[b], masks[b])
    assert got["d"][b] == pytest.approx(one["d"]) and got["auroc"][b] == pytest.approx(one["auroc"])
  with pytest.raises(ValueError, match="is_rosetta"):
    pol.effect_sizes(v, masks[:, :10])


def test_domains_outputs(workdir):
  wd, _ = workdir
  res = _load(wd, "domains")
  assert set(res["domains"]) >= {"code", "math", "prose"}
  for e in res["per_size"]:
    assert sum(e["share_rosetta"].values()) == pytest.approx(1.0)
    assert e["controls"] == e["rosetta"]          # layer-matched, same numbers
    assert 0 <= e["specialised_rosetta"] <= 1
  for v in res["depth"].values():
    assert len(v["density"]) == 2 and all(0 <= d <= 1 for d in v["density"])
  assert res["gallery"] and all("<mark>" in s["html"] for g in res["gallery"]
                                for s in g["snippets"])
  html = open(os.path.join(wd, "domains", "report.html")).read()
  assert html.count("Plotly.newPlot") >= 2 and "<mark>" in html


def test_null_collapses_and_ablations(workdir):
  wd, _ = workdir
  res = _load(wd, "null_ablation")
  v = res["variants"]
  for name in ("k=1", "k=3", "k=5", "k=10", "pool=max", "pool=last", "units=0.25", "null"):
    assert len(v[name]["counts"]) == 3, name
  # Mutual k-NN counts grow with k at every size.
  c = np.array([v[f"k={k}"]["counts"] for k in (1, 3, 5, 10)])
  assert np.all(np.diff(c, axis=0) >= 0)
  # The thresholded null collapses: far below the real count.
  tr = res["null_threshold_ratio"]["0.3"]
  assert tr["real"] >= 10 and tr["null"] <= 0.1 * tr["real"]
  for x in res["null_ratio"]:
    assert x["null_r_max"] < x["real_r_max"]
  assert math.isfinite(v["k=3"]["fit"]["beta"])
  assert _figures(os.path.join(wd, "null_ablation", "report.html")) >= 5
  # The re-pooled recordings (each as large as the main store) are removed once
  # every pair's pooling counts are cached.
  sub = os.path.join(wd, "null_ablation")
  assert not any(d.startswith("pool_") for d in os.listdir(sub))
  assert any(f.endswith("-pool_max.json") for f in os.listdir(os.path.join(sub, "cache")))


def test_cached_null_ablation_records_nothing(workdir, monkeypatch):
  """With every pair's pooling counts cached, no re-pooled recording is made."""
  from rosetta_jax.studies import null_ablation  # pylint: disable=g-import-not-at-top
  wd, _ = workdir
  before = _load(wd, "null_ablation")["variants"]["pool=max"]["counts"]
  ctx = polarization.load_context(MICRO, wd, "zoo", progress=False)

  def no_recording(*args, **kwargs):
    raise AssertionError("re-recorded although the pooling counts are cached")
  monkeypatch.setattr(null_ablation.common, "record_models", no_recording)
  res = null_ablation.run_null_ablation(MICRO, wd, "zoo", progress=False, ctx=ctx)
  assert res["variants"]["pool=max"]["counts"] == before


def test_reproduce_report(workdir):
  wd, stdout = workdir
  res = _load(wd, "reproduce")
  claims = [r["claim"] for r in res["summary"]]
  assert any(c.startswith("1.") for c in claims) and any(c.startswith("4.") for c in claims)
  assert not res["theory"] and not any(c.startswith("5.") for c in claims)
  assert all(r["agrees"] for r in res["summary"])
  for study in ("polarization", "domains", "null_ablation", "reproduce"):
    with open(os.path.join(wd, study, "results.json")) as f:
      nums = _finite_numbers(json.load(f))
    assert nums and sum(math.isfinite(x) for x in nums) > 0.9 * len(nums), study
  html = open(os.path.join(wd, "reproduce", "report.html")).read()
  for title in ("Summary", "Claim 1", "Claim 2", "Claim 3", "Claim 4"):
    assert title in html
  assert html.count("Plotly.newPlot") >= 12
  assert os.path.exists(os.path.join(wd, "results.json"))     # the scaling study's own


def test_config_loader_and_workdir_guard(workdir, tmp_path):
  wd, _ = workdir
  cfg = config.load_study_config(os.path.join(wd, "micro.json"))
  assert cfg == MICRO
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"config": {"nope": 1}}))
  with pytest.raises(ValueError, match="not a study config"):
    config.load_study_config(str(bad))
  other = config.StudyConfig(zoo=MICRO.zoo, record_docs=0, record_chars=60, bootstrap=7)
  with pytest.raises(ValueError, match="different configuration"):
    polarization.run_polarization(other, wd, "zoo", progress=False)
