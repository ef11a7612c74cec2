"""Data-filtering study (claim 6): neuron selection, document scoring, smoke run."""
import dataclasses
import json
import os

import types

import numpy as np
import pytest

from rosetta_jax import pairs
from rosetta_jax.analysis import datafilter
from rosetta_jax.data import corpus
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


def _docs(n, domains=("math", "prose", "code")):
  return [corpus.Document(f"doc-{i}", "x" * (i + 1), domains[i % len(domains)])
          for i in range(n)]


def test_document_sets_are_disjoint_deterministic_and_unseen():
  docs = _docs(300)
  sel_ids = [d.doc_id for d in docs[::3]]
  sets = datafilter.split_documents(docs, sel_ids, pool_share=0.6)
  ids = [{d.doc_id for d in getattr(sets, k)} for k in ("selection", "pool", "evaluation")]
  assert ids[0] == set(sel_ids)
  assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
  assert ids[0] | ids[1] | ids[2] == {d.doc_id for d in docs}
  # By the hash of the id alone: the same split in another order, with a share near 0.6.
  again = datafilter.split_documents(docs[::-1], sel_ids, pool_share=0.6)
  assert {d.doc_id for d in again.pool} == ids[1]
  assert 0.45 < len(ids[1]) / 200 < 0.75
  capped = datafilter.split_documents(docs, sel_ids, pool_share=0.6, max_pool=20)
  assert len(capped.pool) == 20 and {d.doc_id for d in capped.pool} <= ids[1]
  assert {d.doc_id for d in capped.evaluation} == ids[2]
  with pytest.raises(ValueError, match="pool and evaluation sets share"):
    datafilter.DocumentSets(sets.selection, sets.pool, sets.pool[:1]).check()
  with pytest.raises(ValueError, match="training documents of the starting model"):
    sets.check(trained_ids=[sets.evaluation[0].doc_id])
  with pytest.raises(ValueError, match="not in the held-out"):
    datafilter.split_documents(docs, ["nope"], pool_share=0.6)


def test_study_sets_on_the_corpus_avoid_the_train_split():
  # The study's own sets for the tiny preset's recorded documents: the selection set
  # is the unit-budget subset the pair is re-matched on, and no pool or evaluation
  # document is a training document of the zoo or a selection document.
  cfg = config.PRESETS["tiny"]
  ctx = types.SimpleNamespace(cfg=cfg, docs=context.study_documents(cfg))
  fcfg = config.FilterConfig()
  sets = study.document_sets(ctx, fcfg)
  keep = pairs.budget_documents(len(ctx.docs), fcfg.selection_fraction, cfg.seed)
  assert [d.doc_id for d in sets.selection] == [ctx.docs[i].doc_id for i in keep]
  train_ids = {d.doc_id for d in corpus.load_corpus("train")}
  for other in (sets.pool, sets.evaluation):
    assert other and not {d.doc_id for d in other} & train_ids
    assert not {d.doc_id for d in other} & {d.doc_id for d in sets.selection}
  assert not {d.doc_id for d in sets.pool} & {d.doc_id for d in sets.evaluation}
  n = {k: v["documents"] for k, v in sets.summary().items()}
  assert sum(n.values()) == len(corpus.load_corpus("heldout"))


def test_every_arm_gets_the_same_token_budget():
  rng = np.random.default_rng(1)
  doc_tokens = [rng.integers(0, 50, size=int(rng.integers(5, 40))).astype(np.int32)
                for _ in range(30)]
  doms = np.array(["math" if i % 4 == 0 else "prose" for i in range(30)])
  scores = {"rosetta": rng.normal(size=30), "control": rng.normal(size=30)}
  orders = datafilter.arm_orders(scores, doms, "math", (0, 1))
  budget = 97
  streams = datafilter.arm_streams(doc_tokens, orders, budget)
  assert set(streams) == {"rosetta", "control", "random", "oracle"}
  for name, (s, used) in streams.items():
    assert len(s) == budget
    ref = np.concatenate([doc_tokens[i] for i in orders[name][:used]])[:budget]
    np.testing.assert_array_equal(s, ref)
    # The last document drawn on was needed: one fewer would not fill the budget.
    assert sum(len(doc_tokens[i]) for i in orders[name][:used - 1]) < budget
  assert set(orders["oracle"]) == set(np.flatnonzero(doms == "math"))
  assert sorted(orders["random"]) == list(range(30))
  again = datafilter.arm_orders(scores, doms, "math", (0, 1))
  np.testing.assert_array_equal(again["random"], orders["random"])
  assert not np.array_equal(datafilter.arm_orders(scores, doms, "math", (0, 2))["random"],
                            orders["random"])
  with pytest.raises(ValueError, match="fewer than the budget"):
    datafilter.take_budget(doc_tokens, orders["oracle"][:1], budget)


def test_scorer_picks_planted_documents():
  # Selection units: neurons 0-2 fire on the target domain; 0 and 1 are Rosetta
  # neurons, 2 is not; neuron 3 fires on the other domain. Pool: 40 documents, of
  # which 5 (planted) light up neurons 0 and 1.
  rng = np.random.default_rng(2)
  domains = np.array(["math"] * 60 + ["prose"] * 140)
  x = rng.normal(size=(200, 6))
  x[:60, :3] += 2.5
  x[60:, 3] += 2.5
  is_rosetta = np.array([1, 1, 0, 1, 0, 0], bool)
  sel = datafilter.domain_selectivity(ArraySource(x), domains, "math")
  chosen = datafilter.pick_neurons(sel, is_rosetta, 2)
  assert sorted(chosen) == [0, 1]
  planted = np.array([3, 11, 17, 28, 36])
  lens = rng.integers(2, 6, size=40)
  offs = np.r_[0, np.cumsum(lens)]
  pool = rng.normal(size=(offs[-1], 6))
  for d in planted:
    pool[offs[d]:offs[d + 1], :2] += 3.0
  mean, sd = x.mean(0), x.std(0)
  scores = datafilter.score_documents(ArraySource(pool), offs, chosen, mean, sd, chunk=7)
  orders = datafilter.arm_orders({"rosetta": scores}, np.array(["prose"] * 40), "prose", 0)
  assert sorted(orders["rosetta"][:5]) == list(planted)
  tokens = [np.full(5, i, np.int32) for i in range(40)]
  stream, used = datafilter.take_budget(tokens, orders["rosetta"], 25)
  assert used == 5 and set(stream) == set(planted)
  # The other-domain neuron does not find them.
  other = datafilter.score_documents(ArraySource(pool), offs, np.array([3]), mean, sd)
  assert len(set(np.argsort(-other)[:5]) & set(planted)) < 3


def test_oracle_share_on_known_numbers():
  share = datafilter.oracle_share(4.0, [3.5, 3.0, 4.2, 3.0], [3.0, 3.0, 3.0, 4.5])
  np.testing.assert_allclose(share[:3], [0.5, 1.0, -0.2])
  assert np.isnan(share[3])            # the oracle gained nothing: undefined
  np.testing.assert_allclose(datafilter.oracle_share([5.0, 5.0], [4.5, 4.0], [4.0, 3.0]),
                             [0.5, 0.5])


def test_frequency_and_unit_rows():
  x = np.array([[1.0, -1.0, 0.0], [2.0, 0.5, 0.0], [-1.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
  np.testing.assert_allclose(datafilter.frequency(ArraySource(x), chunk=3), [0.75, 0.5, 0.0])
  np.testing.assert_array_equal(datafilter.unit_rows([0, 2, 3, 6], [0, 2]), [0, 1, 3, 4, 5])


@pytest.mark.slow
def test_smoke(tmp_path):
  from test_scaling_study import MICRO  # pylint: disable=g-import-not-at-top
  fcfg = config.FilterConfig(pool_docs=80, pool_chars=400, steps=10, repeats=2, neurons=4,
                              select_fraction=0.1)
  ctx = context.load_context(MICRO, str(tmp_path), progress=False)
  res = registry.run_study("data_filter", ctx, fcfg)
  assert set(res.arms) == set(study.ARMS)
  assert res.sets["pool"]["documents"] == 80
  for r in res.arms.values():
    assert np.all(np.isfinite(r["target_loss"])) and len(r["curve_target"]) == 2
  # The oracle trains on target-domain tokens only; the oracle's own share is 1.
  assert res.arms["oracle"]["precision"] == [1.0, 1.0]
  np.testing.assert_allclose(
      [x for x in res.arms["oracle"]["target_oracle_share"] if x is not None], 1.0)
  assert os.path.exists(tmp_path / "data_filter" / "report.html")
  with open(tmp_path / "data_filter" / "results.json") as f:
    out = json.load(f)
  assert out["budget_tokens"] == res.budget_tokens > 0 and out["steps"][-1] == 10
