r"""Claim 6: do Rosetta neurons select useful data for continued pretraining?

    python -m experiments.data_filter --models=zoo --preset=tiny --workdir=runs/tiny \
        --target=math

Reuses (or builds) the scaling study's zoo, stores and matches in ``--workdir``.
Three disjoint sets of held-out documents: a selection set (the largest pair is
re-matched on it; the selector neurons are chosen on its units), a pool the model
never trained on, and an evaluation set. Arms under one token budget and one
optimiser, ``--repeats`` seeds each: Rosetta-selected, a matched non-Rosetta
control, random, the oracle (the target domain's documents by label), and the
starting model. Writes ``WORKDIR/data_filter/{config,results}.json`` and
``report.html``: evaluation loss on the target and other domains, the share of
the oracle's gain each arm recovers (t-intervals over seeds), learning curves.
Timing on the tiny zoo: docs/data_filter.md.
What to look for: the Rosetta arm's share of the oracle's gain, against the
control's and random's.
"""
from __future__ import annotations

from absl import flags

from experiments import common_flags as cf
from rosetta_jax.studies import context, registry

cf.define_study_flags()
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(cf.config_lib)
cf.config_lib.define_flags(cf.config_lib.FilterConfig)


def main(argv):
  cfg = cf.study_config(argv)
  fcfg = cf.config_lib.apply_flags(cf.config_lib.FilterConfig())
  ctx = context.load_context(cfg, cf.WORKDIR.value, cf.models(), progress=cf.PROGRESS.value,
                             mesh=cf.study_mesh())
  res = registry.run_study("data_filter", ctx, fcfg)
  print(f"start        evaluation {res.target} loss {res.start['target']:.4f}")
  for name, r in res.arms.items():
    m, lo, hi = r["target_loss_ci"]
    share = r["target_oracle_share_ci"] or (float("nan"),) * 3
    print(f"{name:12s} {res.target} tokens {r['precision_ci'][0]:.2f}  evaluation "
          f"{res.target} loss {m:.4f} [{lo:.4f}, {hi:.4f}]  oracle share {share[0]:.2f} "
          f"[{share[1]:.2f}, {share[2]:.2f}]")
  print(f"wrote {cf.WORKDIR.value}/data_filter/results.json and report.html")
  cf.finish(ctx, res)


if __name__ == "__main__":
  cf.run(main)
