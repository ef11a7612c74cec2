"""The data-filtering case study (claim 6): Rosetta neurons select training data.

``run_data_filter(cfg, fcfg, workdir, models="zoo")`` reuses the scaling study's
models, stores and matches in ``workdir`` (it runs the stages that are missing),
then, for the largest pair's model A:

1. picks the ``neurons`` Rosetta neurons most selective for ``target`` on the
   labelled held-out units, and as a control the same number of the most
   selective non-Rosetta neurons;
2. records A on an unlabelled pool of training documents and scores each document
   by those neurons; selects the top ``select_fraction`` (Rosetta), the top by
   the control neurons, and a random subset of the same size;
3. continues pretraining A on each subset, ``repeats`` times with different data
   orders, and measures held-out loss on the target domain and on the others.

Results go to ``workdir/data_filter/``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import plotly.graph_objects as go

from rosetta_jax import recording as record_lib
from rosetta_jax.analysis import bootstrap, datafilter
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.report.html import Report
from rosetta_jax.studies import common
from rosetta_jax.studies.scaling import match_pair
from rosetta_jax.zoo import config as config_lib
from rosetta_jax.zoo import train

SUBSETS = ("rosetta", "non_rosetta", "random")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """Settings of the data-filtering study.

  Attributes:
    target: the domain to select for.
    neurons: selector neurons (Rosetta, and the same number for the control).
    pool_docs: training documents in the unlabelled candidate pool.
    pool_chars: characters kept from each pool document.
    select_fraction: share of the pool each selector keeps.
    steps: continued-pretraining steps per run.
    lr: its peak learning rate.
    repeats: runs per subset (different data orders), for the CI.
    seed: seed of the pool sample and the random subset.
  """
  target: str = "math"
  neurons: int = 16
  pool_docs: int = 600
  pool_chars: int = 1500
  select_fraction: float = 0.2
  steps: int = 150
  lr: float = 1e-3
  repeats: int = 3
  seed: int = 0

  def __post_init__(self):
    if not 0 < self.select_fraction < 1:
      raise ValueError(f"select_fraction must be in (0, 1), got {self.select_fraction}")
    if self.neurons < 1 or self.steps < 1 or self.repeats < 1:
      raise ValueError("neurons, steps and repeats must be >= 1")


def _pool(fcfg: FilterConfig) -> list[corpus_lib.Document]:
  docs = corpus_lib.load_corpus("train")
  rng = np.random.default_rng(fcfg.seed)
  pick = np.sort(rng.choice(len(docs), size=min(fcfg.pool_docs, len(docs)), replace=False))
  return [dataclasses.replace(docs[i], text=docs[i].text[:fcfg.pool_chars]) for i in pick]


def _mean_ci(x) -> tuple[float, float, float]:
  x = np.asarray(x, dtype=np.float64)
  if len(x) < 2:
    return float(x.mean()), float("nan"), float("nan")
  from scipy import stats  # pylint: disable=g-import-not-at-top
  h = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
  return float(x.mean()), float(x.mean() - h), float(x.mean() + h)


def run_data_filter(cfg: config_lib.StudyConfig, fcfg: FilterConfig, workdir: str,
                    models: str = "zoo", progress: bool = True) -> dict:
  """Runs the study; writes config.json, results.json, report.html under
  ``workdir/data_filter``; returns the results."""
  out_dir = os.path.join(workdir, "data_filter")
  common.prepare_workdir(out_dir, {"study": "data_filter", "models": models,
                                   "config": config_lib.to_dict(cfg),
                                   "filter": dataclasses.asdict(fcfg)})
  pairs = common.resolve_models(models, cfg, workdir, progress=progress)
  pair = max(pairs, key=lambda p: p.size)
  model = pair.a
  docs = common.study_documents(cfg)
  stores = common.record_models([pair.a, pair.b], docs, workdir, cfg, progress=progress)
  weights = bootstrap.bootstrap_weights(len(docs), cfg.bootstrap, cfg.seed)
  matched = match_pair(pair, stores, cfg, weights, os.path.join(workdir, "pairs"))
  held = stores[model.name]
  sites = model.mlp_sites()
  src = datafilter.concat_sites(held, sites)
  domains = datafilter.unit_domains(held.documents)
  if fcfg.target not in set(domains):
    raise ValueError(f"target domain {fcfg.target!r} is not among {sorted(set(domains))}")
  sel = datafilter.domain_selectivity(src, domains, fcfg.target)
  is_rosetta = np.zeros(src.num_neurons, bool)
  is_rosetta[np.asarray(matched["idx_a"], dtype=np.int64)] = True
  chosen = {"rosetta": datafilter.pick_neurons(sel, is_rosetta, fcfg.neurons),
            "non_rosetta": datafilter.pick_neurons(sel, ~is_rosetta, fcfg.neurons)}
  # Score the unlabelled pool with the held-out moments of the chosen neurons.
  pool = _pool(fcfg)
  pool_store = record_lib.record(model, pool, sites, os.path.join(out_dir, "pool_acts"),
                                 batch_size=cfg.record_batch, max_len=cfg.record_len,
                                 pooling=cfg.pooling, progress=progress)
  moms = held.moments()
  mean = np.concatenate([moms[s].mean for s in sites])
  sd = np.sqrt(np.concatenate([moms[s].var for s in sites]))
  sd = np.where(sd > 0, sd, 1.0)
  pool_src = datafilter.concat_sites(pool_store, sites)
  offs = pool_store.documents["unit_offsets"]
  k = max(1, int(round(fcfg.select_fraction * len(pool))))
  rng = np.random.default_rng(fcfg.seed + 1)
  picks = {name: np.argsort(-datafilter.score_documents(pool_src, offs, n, mean, sd),
                            kind="stable")[:k] for name, n in chosen.items()}
  picks["random"] = rng.choice(len(pool), size=k, replace=False)
  pool_domains = np.array([d.domain for d in pool])
  # Continue pretraining on each subset; evaluate on held-out target / other text.
  tok = model.tokenizer
  heldout = corpus_lib.load_corpus("heldout")
  eval_target = train.token_stream(tok, [d for d in heldout if d.domain == fcfg.target])
  eval_other = train.token_stream(tok, [d for d in heldout if d.domain != fcfg.target])
  seq = cfg.zoo.seq_len if models == "zoo" else cfg.record_len
  base_loss = {"target": train.heldout_loss(model, eval_target, seq, 64),
               "other": train.heldout_loss(model, eval_other, seq, 64)}
  runs = {}
  for name in SUBSETS:
    stream = train.token_stream(tok, [pool[i] for i in picks[name]])
    losses = {"target": [], "other": []}
    for rep in range(fcfg.repeats):
      tuned, _ = train.continue_training(model, stream, fcfg.steps, lr=fcfg.lr,
                                         batch_size=cfg.zoo.batch_size, seq_len=seq, seed=rep)
      losses["target"].append(train.heldout_loss(tuned, eval_target, seq, 64))
      losses["other"].append(train.heldout_loss(tuned, eval_other, seq, 64))
    runs[name] = {
        "precision": float(np.mean(pool_domains[picks[name]] == fcfg.target)),
        "target_loss": losses["target"], "other_loss": losses["other"],
        "target_loss_ci": _mean_ci(losses["target"]),
        "other_loss_ci": _mean_ci(losses["other"]),
        "selectivity": (float(sel[chosen[name]].mean()) if name in chosen else None),
    }
  results = {
      "study": "data_filter", "model": model.name, "pair": pair.label,
      "target": fcfg.target, "pool_docs": len(pool), "selected": k,
      "pool_target_share": float(np.mean(pool_domains == fcfg.target)),
      "rosetta_neurons": int(is_rosetta.sum()), "base_loss": base_loss, "subsets": runs,
      "rosetta_beats_random": bool(runs["rosetta"]["target_loss_ci"][2]
                                   < runs["random"]["target_loss_ci"][1]),
  }
  common.write_json(os.path.join(out_dir, "results.json"), results)
  _report(results, os.path.join(out_dir, "report.html"))
  return results


def data_filter_section(rep: Report, res: dict) -> Report:
  """Adds the data-filtering study (claim 6) to a report."""
  rep.section("Claim 6: Rosetta neurons select data for continued pretraining")
  rep.text(f"Model {res['model']}: {res['rosetta_neurons']} Rosetta neurons. Each selector keeps "
           f"{res['selected']} of {res['pool_docs']} unlabelled training documents "
           f"({100 * res['pool_target_share']:.0f}% are {res['target']}).")
  rows = []
  for name, r in res["subsets"].items():
    m, lo, hi = r["target_loss_ci"]
    rows.append([name, f"{100 * r['precision']:.0f}%", f"{m:.4f} [{lo:.4f}, {hi:.4f}]",
                 f"{r['other_loss_ci'][0]:.4f}"])
  rep.table(["selector", f"{res['target']} precision", f"held-out {res['target']} loss (95% CI)",
             "other-domain loss"], rows)
  fig = go.Figure()
  for name, r in res["subsets"].items():
    m, lo, hi = r["target_loss_ci"]
    fig.add_trace(go.Bar(x=[name], y=[m], error_y=dict(type="data", symmetric=False,
                                                        array=[hi - m], arrayminus=[m - lo]),
                         name=name))
  fig.add_hline(y=res["base_loss"]["target"], line_dash="dot",
                annotation_text="before continued pretraining")
  fig.update_layout(title=f"Held-out {res['target']} loss after continued pretraining",
                    yaxis_title="loss (nats/token)", template="plotly_white", height=420,
                    showlegend=False)
  rep.figure(fig)
  rep.text("Rosetta-selected data beats a random subset: "
           f"{'yes' if res['rosetta_beats_random'] else 'not significantly'}.")
  return rep


def _report(res: dict, path: str) -> None:
  rep = Report("rosetta_jax: Rosetta neurons as data filters")
  data_filter_section(rep, res)
  rep.write(path)
