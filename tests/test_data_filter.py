"""Data-filtering study (claim 6): neuron selection, document scoring, smoke run."""
import dataclasses
import json
import os

import numpy as np
import pytest

from rosetta_jax.analysis import datafilter
from rosetta_jax.match.sources import ArraySource
from rosetta_jax.studies import config, context, registry
from rosetta_jax.studies import datafilter as study


def test_selectivity_and_scores_on_constructed_neurons():
  rng = np.random.default_rng(0)
  domains = np.array(["math"] * 50 + ["prose"] * 150)
  x = rng.normal(size=(200, 4))
  x[:50, 1] += 3.0                   # a math neuron
  x[50:, 2] += 3.0                   # a prose neuron
  x[:, 3] = 1.0                      # a constant neuron
  sel = datafilter.domain_selectivity(ArraySource(x), domains, "math", chunk=37)
  m = domains == "math"
  with np.errstate(invalid="ignore", divide="ignore"):
    ref = (x[m].mean(0) - x[~m].mean(0)) / x.std(0)
  np.testing.assert_allclose(sel[:3], ref[:3], rtol=1e-9)
  assert sel[1] > 1.5 and sel[2] < -1.5 and abs(sel[0]) < 0.5 and sel[3] == 0.0
  assert list(datafilter.pick_neurons(sel, np.array([1, 1, 1, 0], bool), 2)) == [1, 0]
  offs = np.array([0, 50, 120, 200])  # doc 0 = the math units
  scores = datafilter.score_documents(ArraySource(x), offs, np.array([1]), x.mean(0),
                                      x.std(0) + (x.std(0) == 0), chunk=33)
  assert np.argmax(scores) == 0
  np.testing.assert_allclose(scores[1], ((x[50:120, 1] - x[:, 1].mean()) / x[:, 1].std()).mean())
  with pytest.raises(ValueError, match="some but not all"):
    datafilter.domain_selectivity(ArraySource(x), domains, "code")


def test_filter_config_validates():
  with pytest.raises(ValueError, match="select_fraction"):
    config.FilterConfig(select_fraction=1.5)


@pytest.mark.slow
def test_smoke(tmp_path):
  from test_scaling_study import MICRO  # pylint: disable=g-import-not-at-top
  fcfg = config.FilterConfig(pool_docs=80, pool_chars=400, steps=10, repeats=2, neurons=4)
  ctx = context.load_context(MICRO, str(tmp_path), progress=False)
  res = registry.run_study("data_filter", ctx, fcfg)
  assert set(res.subsets) == set(study.SUBSETS)
  for r in res.subsets.values():
    assert 0 <= r["precision"] <= 1 and np.all(np.isfinite(r["target_loss"]))
  assert os.path.exists(tmp_path / "data_filter" / "report.html")
  with open(tmp_path / "data_filter" / "results.json") as f:
    assert json.load(f)["selected"] == 16
