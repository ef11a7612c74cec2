"""Smoke tests of the reproduce binary (every study end to end) and one study binary.

One micro zoo is trained and recorded once (by ``experiments.reproduce``, which runs
every registered study); ``experiments.polarization`` then runs on the same workdir,
reusing the zoo, stores and pairs.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rosetta_jax import io as io_lib
from rosetta_jax.studies import config, context, registry
from rosetta_jax.zoo.config import ZooConfig

# Like test_scaling_study's MICRO, but a prefix of every held-out document, so all
# domains are present.
MICRO = config.StudyConfig(
    zoo=ZooConfig(widths=(16, 32, 64), num_layers=2, vocab_size=400, seq_len=32,
                         batch_size=8, steps=40, warmup=5, ckpt_every=20),
    record_docs=0, record_chars=60, record_len=32, bootstrap=20, candidates=4,
    null_permutations=2, budgets=(), untrained=False, identity_null=False)


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
  io_lib.write_json(cfg_path, {"config": config.to_dict(MICRO)})
  # Every registered study, small: the micro theory sweep, a tiny data selection.
  stdout = {"reproduce": _run("reproduce", wd, cfg_path, "--theory=micro", "--pool_docs=40",
                              "--pool_chars=200", "--steps=4", "--repeats=2", "--neurons=4")}
  # One study binary on the same workdir (the others' binaries are the same few lines
  # around registry.run_study; reproduce has already run every study end to end).
  stdout["polarization"] = _run("polarization", wd, cfg_path, "--noexplorer")
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
  assert [e["label"] for e in res["per_size"]] == ["w16-s0s1", "w32-s0s1", "w64-s0s1"]
  for e in res["per_size"]:
    assert e["rosetta"] > 0 and e["non_rosetta"] > e["rosetta"]
    for m in ("kurtosis", "hoyer", "frequency", "explanation"):
      x = e["metrics"][m]
      assert 0 <= x["auroc"] <= 1 and math.isfinite(x["d"])
      assert 0 <= x["auroc_ci"][0] and x["auroc_ci"][1] <= 1         # clipped to the range
  t = res["trend"]["kurtosis"]["d"]
  assert math.isfinite(t["slope"]) and t["n_boot"] == 20
  assert _figures(os.path.join(wd, "polarization", "report.html")) >= 6
  assert "kurtosis" in stdout["polarization"]
  html = open(os.path.join(wd, "polarization", "report.html")).read()
  assert "Rosetta sets re-matched in every resample" in html


def test_polarization_intervals_use_each_resamples_own_set(workdir):
  """The d interval is the basic interval of d recomputed per resample, each with
  its own re-matched Rosetta set: recomputed here from the pair and neuron caches."""
  from rosetta_jax.analysis import selectivity as sel, stats  # pylint: disable=g-import-not-at-top
  from rosetta_jax.studies import polarization  # pylint: disable=g-import-not-at-top
  wd, _ = workdir
  ctx = context.load_context(MICRO, wd, progress=False)
  res = _load(wd, "polarization")
  pair = ctx.pairs[0]
  full, boot, ros, members = polarization.pair_metrics(ctx, pair)
  assert members.shape == (MICRO.bootstrap, len(ros)) and (members != ros).any()
  sign = sel.SELECTIVE_SIGN["kurtosis"]
  d = stats.effect_sizes(full["kurtosis"], ros, sign)["d"]
  db = stats.effect_sizes(boot["kurtosis"], members, sign)["d"]
  got = res["per_size"][0]["metrics"]["kurtosis"]
  assert got["d"] == pytest.approx(d) and got["d_ci"] == pytest.approx(stats.interval(db, d))
  fixed = stats.effect_sizes(boot["kurtosis"], ros, sign)["d"]        # the set held fixed
  assert stats.interval(fixed, d) != pytest.approx(got["d_ci"])


def test_domains_outputs(workdir):
  wd, _ = workdir
  res = _load(wd, "domains")
  assert set(res["domains"]) >= {"code", "math", "prose"}
  assert res["split"]["selection"] + res["split"]["estimation"] == res["split"]["documents"]
  for e in res["per_size"]:
    for arm in ("in_sample", "held_out"):
      for kind in ("rosetta", "matched", "null"):
        assert sum(e[arm][kind]["share"].values()) == pytest.approx(1.0)
        assert 0 <= e[arm][kind]["specialised"] <= 1
      # Matched on layer and frequency, same numbers (a layer short of non-Rosetta
      # neurons is filled with replacement).
      assert e[arm]["matched"]["count"] == e[arm]["rosetta"]["count"] > 0
      assert e[arm]["null"]["count"] > 0
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
  # Claim 4's ratio is the null's count over the real one.
  for x in res["null_ratio"]:
    assert x["ratio"] == pytest.approx(x["null"] / max(x["real"], 1))
  # Claim 4's verdict is taken under the declared criterion, on the scaling pairs.
  scaling = _load(wd, ".")
  assert [d["count"] for d in res["declared"]] == scaling["counts"]
  assert [d["false_positives"] for d in res["declared"]] == scaling["false_positives"]
  assert "FDR q=0.05" in res["criterion"]


def test_cached_null_ablation_records_nothing(workdir, monkeypatch):
  """With every pair's pooling counts cached, no re-pooled recording is made."""
  wd, _ = workdir
  before = _load(wd, "null_ablation")["variants"]["pool=max"]["counts"]
  ctx = context.load_context(MICRO, wd, progress=False)

  def no_recording(*args, **kwargs):
    raise AssertionError("re-recorded although the pooling counts are cached")
  monkeypatch.setattr(context, "record_models", no_recording)
  res = registry.run_study("null_ablation", ctx, write=False)
  assert res.variants["pool=max"]["counts"] == before


def test_reproduce_report(workdir):
  wd, stdout = workdir
  res = _load(wd, "reproduce")
  claims = [r["claim"] for r in res["summary"]]
  assert any(c.startswith("1.") for c in claims) and any(c.startswith("4.") for c in claims)
  assert res["studies"] == ["scaling", "polarization", "domains", "null_ablation", "theory",
                            "data_filter"]
  assert any(c.startswith("5.") for c in claims) and any(c.startswith("6.") for c in claims)
  # Each row's verdict follows from its interval (the rule, not the truthiness of a string).
  for r in res["summary"]:
    if r["ci"] and "grows with size" in r["claim"]:
      lo, hi = (float(x) for x in r["ci"].strip("[]").split(","))
      want = ("yes" if lo > 0 else "no (opposite)" if hi < 0 else "inconclusive (CI spans 0)")
      assert r["agrees"] == want, r
  for study in ("polarization", "domains", "null_ablation", "theory", "data_filter",
                "reproduce"):
    with open(os.path.join(wd, study, "results.json")) as f:
      nums = _finite_numbers(json.load(f))
    assert nums and sum(math.isfinite(x) for x in nums) > 0.9 * len(nums), study
  html = open(os.path.join(wd, "reproduce", "report.html")).read()
  for title in ("Summary", "Claim 1", "Claim 2", "Claim 3", "Claim 4", "Claim 5", "Claim 6"):
    assert title in html
  assert html.count("Plotly.newPlot") >= 12
  assert os.path.exists(os.path.join(wd, "results.json"))     # the scaling study's own


def test_config_loader_and_workdir_guard(workdir, tmp_path):
  wd, _ = workdir
  cfg = config.load_config(os.path.join(wd, "micro.json"))
  assert cfg == MICRO
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"config": {"nope": 1}}))
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['nope'\]"):
    config.load_config(str(bad))
  other = config.StudyConfig(zoo=MICRO.zoo, record_docs=0, record_chars=60, bootstrap=7)
  with pytest.raises(ValueError, match="bootstrap: 20 in the workdir, 7 now"):
    context.load_context(other, wd, progress=False)


def test_theory_and_data_selection_ran_on_the_same_context(workdir):
  wd, _ = workdir
  theo = _load(wd, "theory")
  measured = next(r for r in theo["table"] if r["source"].startswith("measured"))
  assert measured["beta"] == pytest.approx(_load(wd, ".")["fit"]["count"]["beta"])
  # The variants were evaluated at this run's own sizes and counts (micro: words rule).
  head = _load(wd, ".")["headline"]
  var = theo["variants"]["rules"]["words"]
  assert var["measured"]["sizes"] == head["sizes"]
  assert var["measured"]["counts"] == pytest.approx(head["counts"])
  assert var["n_fit"] == len(head["sizes"]) - 1 and set(var["variants"]) == {
      "allocation", "growing_features", "isolation", "concave"}
  html = open(os.path.join(wd, "theory", "report.html")).read()
  assert "mechanisms at the measured sizes" in html and var["verdict"]["text"] in html
  rows = [r for r in _load(wd, "reproduce")["summary"] if "mechanism fits" in r["claim"]]
  assert len(rows) == 1 and rows[0]["measured"] == (", ".join(var["verdict"]["fits"]) or "none")
  assert rows[0]["agrees"] == ("yes" if var["verdict"]["fits"] else "no")
  filt = _load(wd, "data_filter")
  assert filt["pair"] == "w64-s0s1" and filt["sets"]["pool"]["documents"] == 40
  assert set(filt["arms"]) == {"rosetta", "control", "random", "oracle"}
  for r in filt["arms"].values():
    assert len(r["target_loss"]) == 2 and all(math.isfinite(x) for x in r["target_loss"])
    assert len(r["curve_target"][0]) == len(filt["steps"]) and filt["steps"][-1] == 4
  assert filt["arms"]["oracle"]["precision"] == [1.0, 1.0]
  with open(os.path.join(wd, "data_filter", "config.json")) as f:
    assert json.load(f)["config"]["pool_docs"] == 40
