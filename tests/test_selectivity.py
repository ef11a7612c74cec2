"""Selectivity metrics on constructed neurons whose answers are known."""
import numpy as np
import pytest
from scipy import stats as sps

from rosetta_jax.analysis import selectivity as sel
from rosetta_jax.analysis.bootstrap import bootstrap_weights

DOMAINS = ["code", "math", "prose", "code", "math", "prose", "code", "math"]


def _labels(units_per_doc=20, vocab=5, seed=0):
  rng = np.random.default_rng(seed)
  offs = np.arange(len(DOMAINS) + 1) * units_per_doc
  texts = [f"t{i}" for i in rng.integers(0, vocab, offs[-1])]
  return sel.UnitLabels.build(offs, DOMAINS, texts)


def _neurons(lab, seed=0):
  rng = np.random.default_rng(seed)
  t = lab.num_units
  dom = np.array(lab.domains)[lab.doc_domain[lab.doc_index]]
  one_domain = np.where(dom == "math", 1.0 + rng.random(t), 0.0)       # fires on math only
  dense = 1.0 + 0.01 * rng.standard_normal(t)                          # on everywhere
  constant = np.full(t, 0.3)
  spike = np.zeros(t)
  spike[7] = 5.0                                                       # one unit
  token_fn = np.array([0.0, 1.0, -2.0, 3.0, 0.5])[lab.token]           # a function of the token
  noise = rng.standard_normal(t)
  return np.stack([one_domain, dense, constant, spike, token_fn, noise], 1).astype(np.float32)


@pytest.fixture(scope="module")
def case():
  lab = _labels()
  x = _neurons(lab)
  return lab, x, sel.neuron_stats(x, lab, top_m=8, chunk=48, shrink=1e-6)


def test_known_answers(case):
  lab, x, st = case
  m = sel.metrics(st)
  one, dense, const, spike, tok, noise = range(6)
  # One-domain neuron: DSI 1, all top units in one domain, preferred = math.
  assert m["dsi"][one] == pytest.approx(1.0, abs=1e-6)
  assert m["domain_entropy"][one] == pytest.approx(0.0, abs=1e-9)
  assert lab.domains[m["preferred_domain"][one]] == "math"
  assert m["frequency"][one] == pytest.approx(np.mean(x[:, one] > 0))
  # Dense neuron: fires everywhere, Hoyer ~ 0, DSI ~ 0.
  assert m["frequency"][dense] == 1.0
  assert m["hoyer"][dense] < 1e-3 and abs(m["dsi"][dense]) < 0.05
  # Constant neuron: NaN everywhere and flagged.
  assert st.constant[const] and not st.constant[[one, dense, spike, tok, noise]].any()
  for k in sel.METRICS:
    assert np.isnan(m[k][const]), k
  # A single spike: Hoyer 1.
  assert m["hoyer"][spike] == pytest.approx(1.0, abs=1e-6)
  # Kurtosis equals scipy's (Fisher, biased) for every non-constant neuron.
  for i in (one, dense, spike, tok, noise):
    assert m["kurtosis"][i] == pytest.approx(sps.kurtosis(x[:, i].astype(np.float64)),
                                             rel=1e-4, abs=1e-4)
  # Token neuron: explained by the token predictor; noise is not.
  assert m["explanation"][tok] > 0.999
  assert m["explanation"][noise] < 0.2
  # Token entropy: the top-8 of the token neuron are one token (value 3.0).
  assert m["token_entropy"][tok] == pytest.approx(0.0, abs=1e-9)
  assert m["token_entropy"][noise] > 0.3


def test_streaming_is_chunk_invariant(case):
  lab, x, st = case
  other = sel.neuron_stats(x, lab, top_m=8, chunk=1000, shrink=1e-6)
  a, b = sel.metrics(st), sel.metrics(other)
  for k in sel.METRICS:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, equal_nan=True)
  np.testing.assert_array_equal(np.sort(st.top_units, 1), np.sort(other.top_units, 1))


def test_bootstrap_weights_equal_duplicated_documents(case):
  lab, x, st = case
  w = bootstrap_weights(lab.num_docs, 3, seed=1)
  mb = sel.metrics(st, w, block=2)
  for b in range(3):
    # Brute force: build the resampled dataset with duplicated documents.
    docs = np.repeat(np.arange(lab.num_docs), w[b].astype(int))
    units = np.concatenate([np.flatnonzero(lab.doc_index == d) for d in docs])
    xb = x[units].astype(np.float64)
    for i in (0, 1, 3, 5):
      if np.ptp(xb[:, i]) == 0:        # the spike's document was not drawn
        assert np.isnan(mb["kurtosis"][b, i])
        continue
      assert mb["kurtosis"][b, i] == pytest.approx(sps.kurtosis(xb[:, i]), rel=1e-4, abs=1e-4)
      assert mb["frequency"][b, i] == pytest.approx(np.mean(xb[:, i] > 0))
      l1, l2, n = np.abs(xb[:, i]).sum(), np.sqrt((xb[:, i] ** 2).sum()), len(xb)
      if l2 > 0:
        assert mb["hoyer"][b, i] == pytest.approx((np.sqrt(n) - l1 / l2) / (np.sqrt(n) - 1),
                                                  abs=1e-6)
  assert np.all(np.isnan(mb["kurtosis"][:, 2]))


def test_bad_inputs():
  lab = _labels()
  with pytest.raises(ValueError, match="units"):
    sel.neuron_stats(np.zeros((lab.num_units + 1, 2), np.float32), lab)
  x = _neurons(lab)
  x[3, 1] = np.nan
  with pytest.raises(ValueError, match="finite|NaN|nan"):
    sel.neuron_stats(x, lab)
  with pytest.raises(ValueError, match="documents"):
    sel.UnitLabels.build([0, 2, 4], ["code"], ["a"] * 4)
  st = sel.neuron_stats(_neurons(lab), lab, top_m=4)
  with pytest.raises(ValueError, match="weights"):
    sel.metrics(st, np.ones((2, 3)))
