"""Null and ablations (claim 4's robustness): does the count survive the checks reviewers asked for?

``run(ctx, cfg)`` works on the pipeline's context (``studies/context.py``); its
outputs go to ``workdir/null_ablation/{results.json,report.html}`` and its
per-pair counts are cached in ``workdir/null_ablation/cache`` under keys of
everything that determines them.

Variants, each with counts per size, basic document-bootstrap intervals and the
fitted exponent with its interval:

* ``null``: B's units misaligned by a document-block derangement (the
  dataset-permutation null), reported as a ratio to the real count;
* ``k=1,3,5,10``: mutual k-NN;
* ``r>=x``: best buddies with a correlation threshold;
* ``pool=max``/``pool=last``: units pooled differently (re-recorded into
  ``workdir/null_ablation/pool_<how>/acts``);
* ``units=f``: a seeded random subset of a fraction f of the documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
import plotly.graph_objects as go

from rosetta_jax import io as io_lib
from rosetta_jax.analysis import bootstrap, null as null_lib, stats
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib
from rosetta_jax import pairs as pairs_lib

NAME = "null_ablation"
TITLE = "rosetta_jax: permutation null and ablations"
OUTPUT = "null_ablation"
KS = (1, 3, 5, 10)
R_MINS = (0.3, 0.5, 0.7)
POOLINGS = ("mean", "max", "last")
UNIT_FRACTIONS = (0.125, 0.25, 0.5)
CANDIDATES = 16   # > the largest k (10), so resamples can re-rank every k-NN list


@dataclasses.dataclass(frozen=True)
class NullAblationResult:
  """Attributes:
    sizes, labels: the pairs.
    variants: {variant: {counts, ci, fit}} (criteria, poolings, unit budgets, null).
    null_ratio: per pair, null vs real counts and their r maxima.
    max_null_ratio: the largest null / real count ratio.
    null_threshold_ratio: {r floor: null vs real counts summed over sizes}.
    declared: per pair, under the declared criterion: the real count and its
      interval, the null's expected count at the same threshold (estimated false
      positives) and both mutual-pair counts before any threshold.
  """
  models: str
  sizes: tuple[float, ...]
  labels: tuple[str, ...]
  variants: dict
  null_ratio: tuple[dict, ...]
  max_null_ratio: float
  null_threshold_ratio: dict
  declared: tuple[dict, ...]
  criterion: str
  bootstrap: int
  seconds: dict

  def to_json(self) -> dict:
    return {"study": NAME, "models": self.models, "sizes": list(self.sizes),
            "labels": list(self.labels), "variants": self.variants,
            "null_ratio": list(self.null_ratio), "max_null_ratio": self.max_null_ratio,
            "null_threshold_ratio": self.null_threshold_ratio,
            "declared": list(self.declared), "criterion": self.criterion,
            "bootstrap": self.bootstrap,
            "seconds": self.seconds}


def _acts(store, model):
  return {s: store.site(s) for s in model.mlp_sites()}


def _cached(path: str, fn):
  if os.path.exists(path):
    return io_lib.read_json(path, what="a cached count")
  out = fn()
  io_lib.write_json(path, out)
  return out


def cache_prefix(ctx: context_lib.Context, pair) -> str:
  """Cache files of one pair: keyed on the pair's inputs and every setting used."""
  parts = {"pair": pairs_lib.pair_key(ctx, pair, ctx.cfg.criterion), "ks": KS,
           "r_mins": R_MINS, "candidates": CANDIDATES, "pooling": ctx.cfg.pooling}
  key = hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(ctx.workdir, OUTPUT, "cache", f"{pair.label}-{key}")


def pair_variants(ctx: context_lib.Context, pair, poolings=POOLINGS,
                  fractions=UNIT_FRACTIONS, pool_stores=None) -> dict:
  """{variant name: {count, boot, ci}} for one pair of models."""
  cfg = ctx.cfg
  cache = cache_prefix(ctx, pair)
  sa, sb = ctx.stores[pair.a.name], ctx.stores[pair.b.name]
  doc = pairs_lib.doc_index(sa)
  null_criteria = [(1, None)] + [(1, r) for r in R_MINS]
  null = _cached(cache + "-null.json", lambda: null_lib.count_variants(
      _acts(sa, pair.a), _acts(sb, pair.b), doc, ctx.weights, null_criteria, CANDIDATES,
      null_permutation=cfg.seed + 1))
  out = {"null": null[0]}
  for row, (_, r) in zip(null[1:], null_criteria[1:]):
    out[f"null r>={r}"] = row
  # The null-calibrated exclusion criterion: r above every null pair's r.
  r_cal = float(np.nan_to_num(null[0]["r_max"], nan=0.0))
  criteria = [(k, None) for k in KS] + [(1, r) for r in R_MINS] + [(1, r_cal)]
  base = _cached(cache + "-criteria.json", lambda: null_lib.count_variants(
      _acts(sa, pair.a), _acts(sb, pair.b), doc, ctx.weights, criteria, CANDIDATES))
  for row, (k, r) in zip(base, criteria[:-1]):
    out[f"k={k}" if r is None else f"r>={r}"] = row
  out["r>null max"] = dict(base[-1], threshold=r_cal)
  for how in poolings:
    if how == cfg.pooling:
      continue
    ps = (pool_stores or {}).get(how)
    out[f"pool={how}"] = _cached(cache + f"-pool_{how}.json", lambda ps=ps: null_lib.count_variants(
        _acts(ps[pair.a.name], pair.a), _acts(ps[pair.b.name], pair.b), doc, ctx.weights,
        [(1, None)], CANDIDATES))[0]
  for f in fractions:
    def run_fraction(f=f):
      units = null_lib.document_subset(doc, f, seed=cfg.seed)
      sub_doc = doc[units]
      w = bootstrap.bootstrap_weights(len(np.unique(sub_doc)), cfg.bootstrap, cfg.seed)
      pick = lambda acts: {s: null_lib.UnitSubset(x, units) for s, x in acts.items()}
      return null_lib.count_variants(pick(_acts(sa, pair.a)), pick(_acts(sb, pair.b)), sub_doc,
                                     w, [(1, None)], CANDIDATES)[0] | {"units": int(len(units))}
    out[f"units={f}"] = _cached(cache + f"-units_{f}.json", run_fraction)
  out[f"pool={cfg.pooling}"] = out["k=1"]
  out["units=1.0"] = dict(out["k=1"], units=int(len(doc)))
  return out


def _threshold_ratio(ratios) -> dict:
  """Null / real counts summed over sizes at each r threshold (NaN if no real pair)."""
  out = {}
  for t in R_MINS:
    real = sum(x["thresholded"][str(t)][0] for x in ratios)
    null = sum(x["thresholded"][str(t)][1] for x in ratios)
    out[str(t)] = {"real": real, "null": null, "ratio": null / real if real else float("nan")}
  return out


def _fit(sizes, counts, boot) -> dict:
  try:
    f = stats.fit_power_law(sizes, counts, boot_counts=boot)
    return {"beta": f.beta, "ci": list(f.ci), "r2": f.r2}
  except ValueError as e:                       # e.g. zero counts at most sizes
    return {"beta": float("nan"), "ci": [float("nan")] * 2, "error": str(e)}


def run(ctx: context_lib.Context, cfg: config_lib.StudyConfig | None = None,
        poolings=POOLINGS, fractions=UNIT_FRACTIONS) -> NullAblationResult:
  """Counts every variant of every pair; fits each variant's exponent."""
  cfg = cfg or ctx.cfg
  # Re-pooled recordings (each as large as the main store) are made only for
  # pairs whose pooling counts are not cached yet, and removed once all are.
  pool_stores = {}
  for how in poolings:
    missing = [p for p in ctx.pairs if not os.path.exists(cache_prefix(ctx, p) +
                                                          f"-pool_{how}.json")]
    if how != cfg.pooling and missing:
      pool_stores[how] = context_lib.record_models(
          ctx.unique_models, ctx.docs, os.path.join(ctx.workdir, OUTPUT, f"pool_{how}"),
          dataclasses.replace(cfg, pooling=how), ctx.progress)
  rows = [pair_variants(ctx, p, poolings, fractions, pool_stores) for p in ctx.pairs]
  for how in pool_stores:
    shutil.rmtree(os.path.join(ctx.workdir, OUTPUT, f"pool_{how}"), ignore_errors=True)
  sizes = np.array([p.size for p in ctx.pairs])
  variants = {}
  for name in rows[0]:
    counts = np.array([r[name]["count"] for r in rows])
    boot = np.array([r[name]["boot"] for r in rows]).T
    variants[name] = {"counts": counts.tolist(), "ci": [r[name]["ci"] for r in rows],
                      "fit": _fit(sizes, counts, boot)}
    if "units" in rows[0][name]:
      variants[name]["units"] = rows[0][name]["units"]
  real = np.array([r["k=1"]["boot"] for r in rows], np.float64)
  null = np.array([r["null"]["boot"] for r in rows], np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio_boot = null / real
  ratios = []
  for p, r, rb in zip(ctx.pairs, rows, ratio_boot):
    ratio = r["null"]["count"] / max(r["k=1"]["count"], 1)
    ratios.append({
        "label": p.label, "real": r["k=1"]["count"], "null": r["null"]["count"],
        "ratio": ratio, "ratio_ci": stats.interval(rb, ratio, bounds=(0.0, None)),
        "null_r_max": r["null"]["r_max"], "real_r_max": r["k=1"]["r_max"],
        "thresholded": {str(t): [r[f"r>={t}"]["count"], r[f"null r>={t}"]["count"]]
                        for t in R_MINS},
        "calibrated": r["r>null max"]["count"]})
  declared = []
  for p in ctx.pairs:
    res = ctx.result(p)
    declared.append({"label": p.label, "count": res.count, "count_ci": res.count_ci,
                     "false_positives": res.false_positives, "raw_count": len(res.raw_r),
                     "null_raw_count": res.null_count, "r_threshold": res.r_threshold})
  from rosetta_jax.match.rosetta import Criterion  # pylint: disable=g-import-not-at-top
  return NullAblationResult(
      declared=tuple(declared), criterion=Criterion(**ctx.result(ctx.pairs[0]).criterion).name,
      models=ctx.models, sizes=tuple(sizes.tolist()), labels=tuple(p.label for p in ctx.pairs),
      variants=variants, null_ratio=tuple(ratios),
      max_null_ratio=max(x["ratio"] for x in ratios),
      null_threshold_ratio=_threshold_ratio(ratios), bootstrap=cfg.bootstrap,
      seconds=dict(ctx.seconds))


def null_verdict(declared) -> tuple[bool, str]:
  """Claim 4 under the declared criterion: at every size the real count's lower
  bound exceeds the null's expected count at the same threshold (fails when a size
  has no pair, or chance explains as many as the data hold)."""
  ok = all(d["count"] > 0 and d["count_ci"][0] > d["false_positives"] for d in declared)
  fp = sum(d["false_positives"] for d in declared)
  real = sum(d["count"] for d in declared)
  return ok, f"null {fp:.1f} expected vs {real} real pairs"


def claims(result: NullAblationResult) -> list[list]:
  ok, measured = null_verdict(result.declared)
  k = result.variants["k=3"]["fit"]
  return [["4. the permutation null explains few pairs (declared criterion)", measured,
           "", "yes" if ok else "no"],
          ["4. exponent with mutual 3-NN instead of best buddies", f"beta = {k['beta']:.3f}",
           f"[{k['ci'][0]:.3f}, {k['ci'][1]:.3f}]",
           "yes" if k["ci"][1] < 1 else "no (CI reaches 1)"]]


def _counts_figure(results: NullAblationResult, names, title: str) -> go.Figure:
  fig = go.Figure()
  sizes = np.array(results.sizes)
  for n in names:
    v = results.variants[n]
    y = np.array(v["counts"], np.float64)
    ci = np.array(v["ci"])
    f = v["fit"]
    fig.add_trace(go.Scatter(
        x=sizes, y=np.where(y > 0, y, np.nan), mode="lines+markers",
        name=f"{n}: beta {f['beta']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]",
        error_y=dict(type="data", symmetric=False, array=ci[:, 1] - y, arrayminus=y - ci[:, 0])))
  fig.update_layout(title=title, xaxis=dict(type="log", title="total MLP neurons N"),
                    yaxis=dict(type="log", title="Rosetta pairs"), template="plotly_white",
                    height=440)
  return fig


def section(rep: Report, result: NullAblationResult) -> Report:
  """Adds the null and ablation section to a report."""
  results = result.to_json()
  v = results["variants"]
  rep.section("Claim 4 checks: permutation null and ablations")
  ok, measured = null_verdict(result.declared)
  rep.text(f"Under the declared criterion ({result.criterion}): {measured} (all sizes). "
           "Verdict: " + ("the null explains few of the pairs at every size" if ok else
                          "at some size the null explains as many pairs as the data, or "
                          "there are none") + ".")
  rep.table(["pair", "count", "95% CI", "est. false positives", "r threshold",
             "mutual NN (real)", "mutual NN (null, per permutation)"],
            [[d["label"], d["count"], f"[{d['count_ci'][0]:.0f}, {d['count_ci'][1]:.0f}]",
              f"{d['false_positives']:.2f}", d["r_threshold"], d["raw_count"],
              f"{d['null_raw_count']:.1f}"] for d in result.declared])
  tr = results["null_threshold_ratio"]
  rep.text(f"Dataset-permutation null (B's documents deranged). Without a threshold, mutual "
           f"nearest neighbours exist by chance: null/real count ratio up to "
           f"{results['max_null_ratio']:.3f}. With an r threshold the null collapses: "
           + "; ".join(f"r >= {t}: {x['null']} null vs {x['real']} real pairs (all sizes)"
                       for t, x in tr.items())
           + f". Exponents with 95% basic bootstrap intervals from {results['bootstrap']} "
           "document resamples.")
  rep.figure(_counts_figure(result, ["k=1", "null", "r>null max"],
                            "Real vs permutation-null counts, and real pairs above the null's max r"))
  rep.figure(_counts_figure(result, [f"k={k}" for k in KS], "Mutual k-NN"))
  rep.figure(_counts_figure(result, ["k=1"] + [f"r>={r}" for r in R_MINS], "r thresholds"))
  pools = [n for n in v if n.startswith("pool=")]
  rep.figure(_counts_figure(result, pools, "Pooling within units"))
  units = sorted((n for n in v if n.startswith("units=")), key=lambda n: float(n[6:]))
  rep.figure(_counts_figure(result, units, "Unit budget (fraction of documents)"))
  rep.table(["pair", "real", "null", "null / real", "95% CI", "max r (real)", "max r (null)",
             "real pairs above null max r"],
            [[x["label"], x["real"], x["null"], x["ratio"],
              f"[{x['ratio_ci'][0]:.3f}, {x['ratio_ci'][1]:.3f}]", x["real_r_max"],
              x["null_r_max"], x["calibrated"]] for x in results["null_ratio"]])
  rep.table(["variant", "counts per size", "beta", "95% CI"],
            [[n, " ".join(str(c) for c in x["counts"]), x["fit"]["beta"],
              f"[{x['fit']['ci'][0]:.3f}, {x['fit']['ci'][1]:.3f}]"] for n, x in v.items()])
  return rep
