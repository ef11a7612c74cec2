"""The theory study end to end on a synthetic scaling run: the variants at the measured
sizes, their out-of-sample test and the verdict land in results.json and the report."""

import json
import math
import os
import types

import numpy as np
import pytest

from rosetta_jax.studies import registry
from rosetta_jax.studies import theory as study
from theory import predict
from theory import variants as V

SIZES = [64.0, 128.0, 256.0, 512.0, 1024.0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("theory_study"))
  fixed = predict.fix_parameters("words", bootstrap=5)      # no zoo tokenizer here: words
  a, f = fixed["alpha"], fixed["num_features"]
  size = V.feature_axis(f, max(SIZES))
  # Counts made by the concave variant (bending down), with +-5% intervals: fitted on
  # the three smallest sizes it must extrapolate; the allocation model cannot bend.
  theta = {"log_nc": math.log(200.0), "logit_detect": V._logit(0.8)}
  counts = np.asarray(V.counts("concave", theta, SIZES, a, f, size), float)
  beta = float(np.polyfit(np.log(SIZES), np.log(counts), 1)[0])
  head = {"beta": beta, "ci": [beta - 0.05, beta + 0.05], "sizes": SIZES,
          "counts": counts.tolist(), "count_ci": [[c * 0.95, c * 1.05] for c in counts]}
  with open(os.path.join(wd, "results.json"), "w") as fh:
    json.dump({"headline": head, "fit": {"count": {"beta": beta, "ci": head["ci"]}}}, fh)
  # The toy sweep (sim) runs in test_reproduce_studies; here the variants alone.
  cfg = study.TheoryConfig(
      None,
      predict.VariantsConfig(rules=("tokens", "words"), variants=("allocation", "concave"),
                             steps=150, reps=20, alpha_bootstrap=5))
  res = registry.run_study("theory", types.SimpleNamespace(workdir=wd, models="zoo"), cfg)
  return wd, res, counts, fixed


def test_results_hold_predictions_at_the_measured_sizes(run):
  wd, res, counts, fixed = run
  with open(os.path.join(wd, "theory", "results.json")) as fh:
    out = json.load(fh)
  # Without the zoo's tokenizer the declared rule falls back to words.
  assert list(out["variants"]["rules"]) == ["words"]
  r = out["variants"]["rules"]["words"]
  assert r["fixed"]["alpha"] == pytest.approx(fixed["alpha"])
  assert r["measured"]["sizes"] == SIZES and r["measured"]["counts"] == pytest.approx(counts)
  size = V.feature_axis(fixed["num_features"], max(SIZES))
  for name in ("allocation", "concave"):
    want = V.counts(name, V.get(name).init, SIZES, fixed["alpha"], fixed["num_features"], size)
    assert r["variants"][name]["apriori"]["counts"] == pytest.approx(np.asarray(want), rel=1e-5)
  conc = r["variants"]["concave"]["out_of_sample"]
  assert all(conc["score"]["in_interval"]) and conc["bootstrap"]["beats_line"] >= 0.95
  lo, hi = conc["bootstrap"]["counts_ci"][-1]
  assert lo < counts[-1] < hi
  assert r["verdict"]["fits"] == ["concave"]
  assert not r["verdict"]["mechanisms"]["allocation"]["fits"]


def test_claims_and_report(run):
  wd, res, _, _ = run
  row = [c for c in study.claims(res) if "mechanism fits" in c[0]]
  assert row and row[0][1] == "concave" and row[0][3] == "yes"
  html = open(os.path.join(wd, "theory", "report.html")).read()
  assert "mechanisms at the measured sizes" in html and "fits by the rule: concave" in html
