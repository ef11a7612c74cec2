"""The data-filtering case study (claim 6): Rosetta neurons select training data.

``run(ctx, fcfg)`` works on the pipeline's context (its models, stores and
pairs); for the largest pair's model A it:

1. picks the ``neurons`` Rosetta neurons most selective for ``target`` on the
   labelled held-out units, and as a control the same number of the most
   selective non-Rosetta neurons;
2. records A on an unlabelled pool of training documents and scores each document
   by those neurons; selects the top ``select_fraction`` (Rosetta), the top by
   the control neurons, and a random subset of the same size;
3. continues pretraining A on each subset, ``repeats`` times with different data
   orders, and measures held-out loss on the target domain and on the others.

Results go to ``workdir/data_filter/``; ``fcfg`` is kept in its config.json.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import plotly.graph_objects as go

from rosetta_jax import recording
from rosetta_jax.analysis import datafilter, stats
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib
from rosetta_jax.studies.config import FilterConfig
from rosetta_jax.zoo import train

NAME = "data_filter"
TITLE = "rosetta_jax: Rosetta neurons as data filters"
OUTPUT = "data_filter"
CONFIG = FilterConfig
SUBSETS = ("rosetta", "non_rosetta", "random")


@dataclasses.dataclass(frozen=True)
class DataFilterResult:
  """Attributes:
    model, pair: the model whose neurons select and its pair.
    target: the domain selected for.
    pool_docs, selected, pool_target_share: the pool and the selection size.
    rosetta_neurons: Rosetta neurons of the model.
    base_loss: held-out losses before continued pretraining.
    subsets: per selector, the precision, the losses of each repeat and their
      t-intervals over repeats, and the chosen neurons' selectivity.
    rosetta_beats_random: the Rosetta selection's target-loss interval lies below
      the random one's.
  """
  model: str
  pair: str
  target: str
  pool_docs: int
  selected: int
  pool_target_share: float
  rosetta_neurons: int
  base_loss: dict
  subsets: dict
  rosetta_beats_random: bool

  def to_json(self) -> dict:
    return {"study": NAME, **dataclasses.asdict(self)}


def _pool(fcfg: FilterConfig) -> list[corpus_lib.Document]:
  docs = corpus_lib.load_corpus("train")
  rng = np.random.default_rng(fcfg.pool_seed)
  pick = np.sort(rng.choice(len(docs), size=min(fcfg.pool_docs, len(docs)), replace=False))
  return [dataclasses.replace(docs[i], text=docs[i].text[:fcfg.pool_chars]) for i in pick]


def run(ctx: context_lib.Context, fcfg: FilterConfig | None = None) -> DataFilterResult:
  """Selects pool documents by neurons of the largest pair's model A, continues
  pretraining on each selection, and measures held-out loss."""
  fcfg = fcfg or FilterConfig()
  cfg = ctx.cfg
  pair = max(ctx.pairs, key=lambda p: p.size)
  model = pair.a
  if model.params is None:
    raise ValueError(f"{model.name}: its weights were freed after recording; the data "
                     "selection study continues training it, so run it in its own process")
  held = ctx.stores[model.name]
  sites = model.mlp_sites()
  src = datafilter.concat_sites(held, sites)
  domains = datafilter.unit_domains(held.documents)
  if fcfg.target not in set(domains):
    raise config_lib.ConfigError(f"target: domain {fcfg.target!r} is not among "
                                 f"{sorted(set(domains))}")
  sel = datafilter.domain_selectivity(src, domains, fcfg.target)
  is_rosetta = ctx.result(pair).mask_a
  chosen = {"rosetta": datafilter.pick_neurons(sel, is_rosetta, fcfg.neurons),
            "non_rosetta": datafilter.pick_neurons(sel, ~is_rosetta, fcfg.neurons)}
  # Score the unlabelled pool with the held-out moments of the chosen neurons.
  pool = _pool(fcfg)
  out_dir = os.path.join(ctx.workdir, OUTPUT)
  pool_store = recording.record(model, pool, sites, os.path.join(out_dir, "pool_acts"),
                                batch_size=cfg.record_batch, max_len=cfg.record_len,
                                pooling=cfg.pooling, progress=ctx.progress)
  moms = held.moments()
  mean = np.concatenate([moms[s].mean for s in sites])
  sd = np.sqrt(np.concatenate([moms[s].var for s in sites]))
  sd = np.where(sd > 0, sd, 1.0)
  pool_src = datafilter.concat_sites(pool_store, sites)
  offs = pool_store.documents["unit_offsets"]
  k = max(1, int(round(fcfg.select_fraction * len(pool))))
  rng = np.random.default_rng(fcfg.pool_seed + 1)
  picks = {name: np.argsort(-datafilter.score_documents(pool_src, offs, n, mean, sd),
                            kind="stable")[:k] for name, n in chosen.items()}
  picks["random"] = rng.choice(len(pool), size=k, replace=False)
  pool_domains = np.array([d.domain for d in pool])
  # Continue pretraining on each subset; evaluate on held-out target / other text.
  tok = model.tokenizer
  heldout = corpus_lib.load_corpus("heldout")
  eval_target = train.token_stream(tok, [d for d in heldout if d.domain == fcfg.target])
  eval_other = train.token_stream(tok, [d for d in heldout if d.domain != fcfg.target])
  seq = cfg.zoo.seq_len if ctx.models == "zoo" else cfg.record_len
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
        "target_loss_ci": stats.mean_interval(losses["target"]),
        "other_loss_ci": stats.mean_interval(losses["other"]),
        "selectivity": (float(sel[chosen[name]].mean()) if name in chosen else None),
    }
  return DataFilterResult(
      model=model.name, pair=pair.label, target=fcfg.target, pool_docs=len(pool), selected=k,
      pool_target_share=float(np.mean(pool_domains == fcfg.target)),
      rosetta_neurons=int(is_rosetta.sum()), base_loss=base_loss, subsets=runs,
      rosetta_beats_random=bool(runs["rosetta"]["target_loss_ci"][2]
                                < runs["random"]["target_loss_ci"][1]))


def claims(result: DataFilterResult) -> list[list]:
  ros, rnd = result.subsets["rosetta"], result.subsets["random"]
  return [[f"6. Rosetta-selected data lowers held-out {result.target} loss vs random",
           f"{ros['target_loss_ci'][0]:.3f} vs {rnd['target_loss_ci'][0]:.3f}",
           f"[{ros['target_loss_ci'][1]:.3f}, {ros['target_loss_ci'][2]:.3f}]",
           "yes" if result.rosetta_beats_random else "no (CIs overlap)"]]


def section(rep: Report, result: DataFilterResult) -> Report:
  """Adds the data-filtering study (claim 6) to a report."""
  res = result.to_json()
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
