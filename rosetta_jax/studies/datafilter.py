"""The data-selection case study (claim 6): do Rosetta neurons select training data?

``run(ctx, fcfg)`` works on the pipeline's context; for model A of the largest
pair (a zoo model, trained on the corpus's train split) it:

1. splits the held-out documents into three disjoint sets
   (``analysis.datafilter.split_documents``): the **selection** set, the
   ``selection_fraction`` of the recorded documents that the unit-budget
   matching keeps (``pairs.budget_documents``), on which the pair is re-matched
   (``pairs.match_pair(budget=...)``: its Rosetta set, null and bootstrap are
   found on these documents' units alone); the **pool**, the other held-out
   documents whose id hashes below ``pool_share``; the **evaluation** set, the
   rest. None of the pool or evaluation documents is a training document of
   the model, or is used to choose neurons (asserted);
2. on the selection units, ranks neurons by target-domain selectivity and takes
   the ``neurons`` most selective Rosetta neurons, and as many of the most
   selective neurons of a non-Rosetta control matched to the Rosetta set on
   layer and activation frequency (``analysis.controls.matched_control``, one
   draw per seed);
3. records A on the pool and scores each pool document by each arm's neurons
   (standardised by the selection units' mean and sd); every arm takes exactly
   the same token budget (``select_fraction`` of the pool's tokens) from its
   documents, best first (``take_budget``): **rosetta**, **control**,
   **random** (a seeded order) and **oracle** (the pool's target-domain
   documents by their label, in a seeded order);
4. continues pretraining A on each arm's tokens with the same optimiser,
   steps and batch (``zoo.train.continue_training``), ``repeats`` seeds per
   arm, and measures the evaluation set's target-domain and other-domain loss
   along the way (learning curves) against the starting model (**start**);
   reports the share of the oracle's gain each arm recovers per seed,
   ``(loss_start - loss_arm) / (loss_start - loss_oracle)``, with t-intervals.

Results go to ``workdir/data_filter/``; ``fcfg`` is kept in its config.json.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import plotly.graph_objects as go

from rosetta_jax import pairs as pairs_lib
from rosetta_jax import recording
from rosetta_jax.analysis import controls, datafilter, stats
from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.match.sources import SelectedSource, source_moments
from rosetta_jax.report import figures
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib
from rosetta_jax.studies.config import FilterConfig
from rosetta_jax.zoo import train

NAME = "data_filter"
TITLE = "rosetta_jax: Rosetta neurons as data filters"
OUTPUT = "data_filter"
CONFIG = FilterConfig
ARMS = ("rosetta", "control", "random", "oracle")    # trained arms; "start" is untrained
EVAL_WINDOWS = 256                                   # at most, per evaluation stream


@dataclasses.dataclass(frozen=True)
class DataFilterResult:
  """Attributes:
    model, pair: the model whose neurons select and its pair.
    target: the domain selected for.
    sets: per document set, its size and domains (``DocumentSets.summary``).
    rosetta_neurons: the pair's Rosetta neurons of the model on the selection set.
    control_balance: the matched control's balance (first seed).
    budget_tokens: tokens every arm trains on (the stream it cycles).
    train_tokens: tokens each run reads (steps x batch x sequence).
    start: the starting model's evaluation losses {"target", "other"}.
    arms: per arm, per seed: target-token share (precision), documents drawn on,
      target and other losses, the oracle share, learning curves; their
      t-intervals over seeds.
    steps: the learning curves' steps (0 = the starting model).
    rosetta_beats_random, rosetta_beats_control: the Rosetta arm's target-loss
      interval lies below the other arm's.
  """
  model: str
  pair: str
  target: str
  sets: dict
  rosetta_neurons: int
  control_balance: dict
  budget_tokens: int
  train_tokens: int
  start: dict
  arms: dict
  steps: list
  rosetta_beats_random: bool
  rosetta_beats_control: bool

  def to_json(self) -> dict:
    return {"study": NAME, **dataclasses.asdict(self)}


def document_sets(ctx: context_lib.Context, fcfg: FilterConfig) -> datafilter.DocumentSets:
  """The selection, pool and evaluation sets of a context (module docstring)."""
  keep = pairs_lib.budget_documents(len(ctx.docs), fcfg.selection_fraction, ctx.cfg.seed)
  heldout = corpus_lib.load_corpus("heldout")
  sets = datafilter.split_documents(heldout, [ctx.docs[i].doc_id for i in keep],
                                    fcfg.pool_share, max_pool=fcfg.pool_docs)
  sets.check(trained_ids=[d.doc_id for d in corpus_lib.load_corpus("train")])
  return sets


class _Evaluator:
  """Held-out loss of one model's parameters on fixed windows of token streams
  (one compiled function for every run of the study)."""

  def __init__(self, model, streams: dict, seq_len: int):
    self.windows = {}
    for name, s in streams.items():
      if len(s) <= seq_len + 2:
        raise config_lib.ConfigError(f"target: the evaluation set's {name} text holds "
                                     f"{len(s)} tokens, too few for seq_len={seq_len}")
      n = max(1, min(EVAL_WINDOWS, (len(s) - 1) // (seq_len + 1)))
      starts = np.linspace(0, len(s) - seq_len - 2, n).astype(int)
      self.windows[name] = jnp.asarray(np.stack([s[i:i + seq_len + 1] for i in starts]))
    module = model.module
    self._loss = jax.jit(lambda p, w: train.loss_fn(module, p, w))

  def __call__(self, params) -> dict:
    return {k: float(self._loss(params, w)) for k, w in self.windows.items()}


def run(ctx: context_lib.Context, fcfg: FilterConfig | None = None) -> DataFilterResult:
  """Chooses neurons on the selection set, selects pool documents under one token
  budget per arm, continues pretraining, and evaluates on the evaluation set."""
  fcfg = fcfg or FilterConfig()
  cfg = ctx.cfg
  pair = max(ctx.pairs, key=lambda p: p.size)
  model = pair.a
  if model.params is None:
    raise ValueError(f"{model.name}: its weights were freed after recording; the data "
                     "selection study continues training it, so run it in its own process")
  sets = document_sets(ctx, fcfg)
  # 1. The neurons, on the selection set's units only.
  held = ctx.stores[model.name]
  sites = model.mlp_sites()
  keep = pairs_lib.budget_documents(len(ctx.docs), fcfg.selection_fraction, cfg.seed)
  if [ctx.docs[i].doc_id for i in keep] != [str(x) for x in
                                             np.asarray(held.documents["doc_ids"])[keep]]:
    raise ValueError(f"{model.name}: the store's documents are not the context's")
  rows = datafilter.unit_rows(held.documents["unit_offsets"], keep)
  src = SelectedSource(datafilter.concat_sites(held, sites), rows)
  domains = datafilter.unit_domains(held.documents)[rows]
  if fcfg.target not in set(domains):
    raise config_lib.ConfigError(f"target: domain {fcfg.target!r} is not among "
                                 f"{sorted(set(domains))}")
  res = pairs_lib.match_pair(ctx, pair, budget=fcfg.selection_fraction)
  is_rosetta = res.mask_a
  sel = datafilter.domain_selectivity(src, domains, fcfg.target)
  freq = datafilter.frequency(src)
  layer = controls.site_index(res.offsets_a)
  mom = source_moments(src)
  mean, sd = mom.mean, np.sqrt(mom.var)
  sd = np.where(sd > 0, sd, 1.0)
  # 2-3. Score the pool; one token budget for every arm.
  pool = [dataclasses.replace(d, text=d.text[:fcfg.pool_chars]) for d in sets.pool]
  out_dir = os.path.join(ctx.workdir, OUTPUT)
  pool_store = recording.record(model, pool, sites, os.path.join(out_dir, "pool_acts"),
                                batch_size=cfg.record_batch, max_len=cfg.record_len,
                                pooling=cfg.pooling, progress=ctx.progress)
  pool_src = datafilter.concat_sites(pool_store, sites)
  offs = pool_store.documents["unit_offsets"]
  pool_domains = np.array([d.domain for d in pool])
  tok = model.tokenizer
  doc_tokens = [train.token_stream(tok, [d]) for d in pool]
  lengths = np.array([len(t) for t in doc_tokens])
  budget = int(fcfg.select_fraction * lengths.sum())
  if lengths[pool_domains == fcfg.target].sum() < budget:
    raise config_lib.ConfigError(
        f"select_fraction: the pool's {fcfg.target} documents hold "
        f"{int(lengths[pool_domains == fcfg.target].sum())} tokens, fewer than the budget of "
        f"{budget} (a share {fcfg.select_fraction} of {int(lengths.sum())}): the oracle arm "
        "cannot fill it; lower --select_fraction")
  seq = cfg.zoo.seq_len
  evaluate = _Evaluator(model, {
      "target": train.token_stream(tok, [d for d in sets.evaluation
                                         if d.domain == fcfg.target]),
      "other": train.token_stream(tok, [d for d in sets.evaluation
                                        if d.domain != fcfg.target])}, seq)
  start = evaluate(model.params)
  every = max(1, fcfg.steps // fcfg.curve_points)
  steps = [0] + [s for s in range(every, fcfg.steps + 1, every)]
  if steps[-1] != fcfg.steps:
    steps.append(fcfg.steps)
  runs = {name: {"precision": [], "documents": [], "target_loss": [], "other_loss": [],
                 "curve_target": [], "curve_other": [], "selectivity": []} for name in ARMS}
  balance = None
  rosetta_neurons = datafilter.pick_neurons(sel, is_rosetta, fcfg.neurons)
  for rep in range(fcfg.repeats):
    mc = controls.matched_control(layer, freq, is_rosetta, seed=(fcfg.pool_seed, rep),
                                  on_short="replace")
    balance = balance or mc.balance.to_dict()
    chosen = {"rosetta": rosetta_neurons,
              "control": datafilter.pick_neurons(sel, mc.mask(len(sel)), fcfg.neurons)}
    scores = {name: datafilter.score_documents(pool_src, offs, n, mean, sd)
              for name, n in chosen.items()}
    orders = datafilter.arm_orders(scores, pool_domains, fcfg.target, (fcfg.pool_seed, rep))
    streams = datafilter.arm_streams(doc_tokens, orders, budget)
    for name in ARMS:
      stream, used = streams[name]
      curve = [start]
      train.continue_training(model, stream, fcfg.steps, lr=fcfg.lr,
                              batch_size=cfg.zoo.batch_size, seq_len=seq, seed=rep,
                              eval_every=every, on_eval=lambda s, p: curve.append(evaluate(p)))
      r = runs[name]
      took = orders[name][:used]
      tgt_tokens = np.minimum(np.cumsum(lengths[took]), budget)
      tgt_tokens = np.diff(np.r_[0, tgt_tokens])[pool_domains[took] == fcfg.target].sum()
      r["precision"].append(float(tgt_tokens / budget))
      r["documents"].append(int(used))
      r["target_loss"].append(curve[-1]["target"])
      r["other_loss"].append(curve[-1]["other"])
      r["curve_target"].append([c["target"] for c in curve])
      r["curve_other"].append([c["other"] for c in curve])
      r["selectivity"].append(float(sel[chosen[name]].mean()) if name in chosen else None)
  for name in ARMS:
    r = runs[name]
    for k in ("target", "other"):
      r[f"{k}_loss_ci"] = stats.mean_interval(r[f"{k}_loss"])
    share = datafilter.oracle_share(start["target"], r["target_loss"],
                                    runs["oracle"]["target_loss"])
    # None where the oracle gains nothing on a seed: the share is undefined there.
    r["target_oracle_share"] = [float(x) if np.isfinite(x) else None for x in share]
    r["target_oracle_share_ci"] = (stats.mean_interval(share) if np.all(np.isfinite(share))
                                   else None)
    r["precision_ci"] = stats.mean_interval(r["precision"])
  below = lambda a, b: bool(runs[a]["target_loss_ci"][2] < runs[b]["target_loss_ci"][1])
  return DataFilterResult(
      model=model.name, pair=pair.label, target=fcfg.target, sets=sets.summary(),
      rosetta_neurons=int(is_rosetta.sum()), control_balance=balance, budget_tokens=budget,
      train_tokens=fcfg.steps * cfg.zoo.batch_size * seq, start=start, arms=runs, steps=steps,
      rosetta_beats_random=below("rosetta", "random"),
      rosetta_beats_control=below("rosetta", "control"))


def _ci(ci, digits: int = 3) -> str:
  if ci is None:
    return "undefined"
  m, lo, hi = ci
  return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def claims(result: DataFilterResult) -> list[list]:
  ros, a = result.arms["rosetta"], result.arms
  share = ros["target_oracle_share_ci"]
  share_txt = ("undefined: the oracle does not beat the starting model" if share is None
               else f"{share[0]:.2f} [{share[1]:.2f}, {share[2]:.2f}] of the oracle's gain")
  return [[f"6. Rosetta-selected data lowers held-out {result.target} loss vs random",
           f"{ros['target_loss_ci'][0]:.3f} vs {a['random']['target_loss_ci'][0]:.3f}",
           f"[{ros['target_loss_ci'][1]:.3f}, {ros['target_loss_ci'][2]:.3f}]",
           "yes" if result.rosetta_beats_random else "no (CIs overlap)"],
          [f"6. ... and vs a matched non-Rosetta control (oracle share: {share_txt})",
           f"{ros['target_loss_ci'][0]:.3f} vs {a['control']['target_loss_ci'][0]:.3f}",
           f"[{a['control']['target_loss_ci'][1]:.3f}, {a['control']['target_loss_ci'][2]:.3f}]",
           "yes" if result.rosetta_beats_control else "no (CIs overlap)"]]


def section(rep: Report, result: DataFilterResult) -> Report:
  """Adds the data-selection study (claim 6) to a report."""
  res = result.to_json()
  s = res["sets"]
  rep.section("Claim 6: Rosetta neurons select data for continued pretraining")
  rep.text(f"Model {res['model']} (pair {res['pair']}): {res['rosetta_neurons']} Rosetta neurons "
           f"on the selection set ({s['selection']['documents']} held-out documents). Pool: "
           f"{s['pool']['documents']} held-out documents the model never trained on; "
           f"evaluation: {s['evaluation']['documents']} others. Every arm trains on the same "
           f"{res['budget_tokens']} tokens budget ({res['train_tokens']} tokens read per run); "
           f"{len(res['arms']['rosetta']['target_loss'])} seeds per arm.")
  rows = [["start (no training)", "", f"{res['start']['target']:.4f}",
           f"{res['start']['other']:.4f}", ""]]
  for name, r in res["arms"].items():
    rows.append([name, f"{100 * r['precision_ci'][0]:.0f}%", _ci(r["target_loss_ci"], 4),
                 _ci(r["other_loss_ci"], 4), _ci(r["target_oracle_share_ci"], 2)])
  rep.table(["arm", f"{res['target']} share of tokens",
             f"evaluation {res['target']} loss (95% CI)", "other-domain loss (95% CI)",
             "share of the oracle's gain"], rows)
  for k, title in (("target", f"Evaluation {res['target']} loss"),
                   ("other", "Evaluation loss on the other domains")):
    curves = {}
    for name, r in res["arms"].items():
      per_step = np.asarray(r[f"curve_{k}"], np.float64).T
      cis = np.array([stats.mean_interval(x) for x in per_step])
      curves[name] = (res["steps"], cis[:, 0], cis[:, 1], cis[:, 2])
    rep.figure(figures.learning_curves(curves, f"{title} during continued pretraining"))
  fig = go.Figure()
  for name, r in res["arms"].items():
    m, lo, hi = r["target_loss_ci"]
    fig.add_trace(go.Bar(x=[name], y=[m], error_y=dict(type="data", symmetric=False,
                                                        array=[hi - m], arrayminus=[m - lo]),
                         name=name))
  fig.add_hline(y=res["start"]["target"], line_dash="dot", annotation_text="starting model")
  fig.update_layout(title=f"Evaluation {res['target']} loss after continued pretraining",
                    yaxis_title="loss (nats/token)", template="plotly_white", height=420,
                    showlegend=False)
  rep.figure(fig)
  rep.text("Rosetta-selected data beats random: "
           f"{'yes' if res['rosetta_beats_random'] else 'not significantly'}; beats the "
           f"matched non-Rosetta control: "
           f"{'yes' if res['rosetta_beats_control'] else 'not significantly'}.")
  return rep
