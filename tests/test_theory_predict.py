"""Predictions at measured sizes and the out-of-sample test, on synthetic scaling results."""

import json
import math

import numpy as np
import pytest

from theory import predict
from theory import variants as V

FIXED = {"rule": "test", "text": "given", "alpha": 1.0, "alpha_ci": [0.98, 1.02],
         "num_features": 1000.0, "num_units": 0}
SIZES = [64.0, 128.0, 256.0, 512.0, 1024.0]


def _results(tmp_path, counts, half=0.1):
  pairs = [{"label": f"w{i}", "size": s, "count": float(c),
            "count_ci": [float(c) * (1 - half), float(c) * (1 + half)]}
           for i, (s, c) in enumerate(zip(SIZES, counts))]
  beta = float(np.polyfit(np.log(SIZES), np.log(counts), 1)[0])
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"pairs": pairs[::-1], "fit": {"count": {"beta": beta,
                                                                      "ci": [beta - .1, beta + .1]}}}))
  return str(path)


def test_read_measured_sorts_and_validates(tmp_path):
  m = predict.read_measured(_results(tmp_path, [10, 20, 40, 80, 160]))
  assert m.sizes.tolist() == SIZES and m.counts.tolist() == [10, 20, 40, 80, 160]
  assert m.count_ci.shape == (5, 2)
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"pairs": []}))
  with pytest.raises(ValueError, match="pairs"):
    predict.read_measured(str(bad))
  with pytest.raises(FileNotFoundError):
    predict.read_measured(str(tmp_path / "none.json"))


def test_out_of_sample_recovers_the_generating_mechanism(tmp_path):
  # Counts made by the concave variant (bending down): fitted on the three smallest
  # sizes it extrapolates to the larger ones; a straight power law overshoots.
  theta = {"log_nc": math.log(150.0), "logit_detect": V._logit(0.8)}
  size = V.feature_axis(1000.0, 1024.0)
  counts = np.asarray(V.counts("concave", theta, SIZES, 1.0, 1000.0, size), float)
  m = predict.read_measured(_results(tmp_path, counts))
  res = predict.evaluate(m, FIXED, names=["concave"], steps=200, log=lambda *_: None)
  oos = res["variants"]["concave"]["out_of_sample"]["score"]
  assert oos["rms_log_error"] < 0.02 and all(oos["in_interval"])
  pl = res["power_law"]["score"]
  assert pl["rms_log_error"] > 0.1 and not any(pl["in_interval"])
  assert all(e > 0 for e in pl["log_error"])        # the line overshoots a concave curve
  # the power law's exponent is the OLS slope on the three smallest sizes.
  want = np.polyfit(np.log(SIZES[:3]), np.log(counts[:3]), 1)[0]
  assert res["power_law"]["beta"] == pytest.approx(want, rel=1e-9)
  ap = res["variants"]["concave"]["apriori"]
  # The a priori beta is the log-log slope of its own predicted counts.
  assert ap["beta"] == pytest.approx(np.polyfit(np.log(SIZES), np.log(ap["counts"]), 1)[0],
                                     rel=1e-6)
  assert len(ap["counts"]) == 5 and ap["score"]["sizes"] == SIZES


def test_fix_parameters_words_rule():
  fixed = predict.fix_parameters("words", bootstrap=5)
  assert fixed["num_features"] > 1000 and 0.5 < fixed["alpha"] < 2.0
  with pytest.raises(ValueError, match="rule"):
    predict.fix_parameters("nope")


def test_docs_tables_are_rendered_from_the_results_json():
  """docs/theory.md's numbers are rendered blocks of its results files (the page's
  agreement with them is tests/test_docs_rendered.py's), and the measured side is the
  scaling study's current summary, read per size with its intervals."""
  from rosetta_jax.report import docs
  root = __file__.rsplit("/tests/", 1)[0]
  with open(f"{root}/docs/theory.md") as f:
    doc = f.read()
  blocks = {m.group("file") + ":" + m.group("template") for m in docs.BLOCK.finditer(doc)}
  want = {"theory_variants:" + t for t in ("theory_rules", "theory_measured",
                                            "theory_predicted_tokens", "theory_oos_tokens",
                                            "theory_predicted_words", "theory_oos_words",
                                            "theory_verdict")}
  assert want | {"theory_zoo_sim:theory_zoo_sim"} <= blocks
  with open(f"{root}/docs/results/theory_variants.json") as f:
    res = json.load(f)["results"]
  m = predict.read_measured(f"{root}/docs/results/scaling_tiny.json")
  for r in res["rules"].values():
    assert r["measured"]["counts"] == pytest.approx(m.counts.tolist())
    np.testing.assert_allclose(r["measured"]["count_ci"], m.count_ci, rtol=1e-12)
    assert r["measured"]["source"]["commit"] == m.source["commit"]
