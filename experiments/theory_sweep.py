"""Theory sweep: predicted vs simulated vs measured Rosetta-count exponent.

Command (the run recorded in docs/theory.md; ~10 minutes on a 2-core CPU)::

  python -m experiments.theory_sweep --preset=default --alpha=corpus \\
      --workdir=runs/theory [--measured=runs/scaling/results.json]

``--preset`` is one of ``theory.simulate.PRESETS`` (micro, tiny, default, paper);
every field of ``SimConfig`` is a flag (``--num_features``, ``--budgets``,
``--num_seeds``, ``--steps``, ...), ``--config`` reads a saved config.json.

What it shows: alpha is fixed from the embedded corpus's word rank-frequency law
(``--alpha=corpus``) or given as a number, never fitted to Rosetta counts. The
capacity model (theory/capacity.py) predicts the Rosetta-count exponent beta for
the simulation's F and budgets; toy ReLU superposition models are trained over
the budgets (vmapped over seeds) and matched with rosetta_jax.match; the measured
beta of the scaling study is read from --measured. results.json, config.json and
a self-contained report.html (table + plots) are written into --workdir.
"""
from __future__ import annotations

from absl import flags, logging

from experiments import common_flags as cf
from rosetta_jax.studies import config as config_lib
from theory import compare, simulate

config_lib.define_flags(simulate.SimConfig, skip=("alpha",))
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(config_lib)
_ALPHA = flags.DEFINE_string("alpha", "corpus", "Utility exponent: a number, or 'corpus' to "
                             "estimate it from the embedded corpus's word rank-frequency law.")
_MEASURED = flags.DEFINE_string("measured", None, "results.json of the scaling study (optional).")
_SEED_NOISE = flags.DEFINE_float("seed_noise", 0.25,
                                 "Capacity model: run-to-run jitter of log margins.")


def _alpha(raw: str) -> dict:
  if raw == "corpus":
    from theory import corpus_stats  # pylint: disable=g-import-not-at-top
    est = corpus_stats.corpus_alpha("all", ngram=1)
    return {"alpha": est["alpha"], "ci": est["ci"], "source":
            f"word rank-frequency law of the embedded corpus ({est['num_units']} words, "
            f"ranks 1..{est['rank_max']})"}
  try:
    a = float(raw)
  except ValueError:
    raise config_lib.ConfigError(f"alpha: must be a number or 'corpus', got {raw!r}") from None
  if not 0.05 <= a <= 10:
    raise config_lib.ConfigError(f"alpha: must lie in [0.05, 10], got {a}")
  return {"alpha": a, "ci": [a, a], "source": "given on the command line"}


def main(argv):
  alpha = _alpha(_ALPHA.value)
  cfg = cf.make_config(argv, simulate.SimConfig, simulate.PRESETS, skip=("alpha",),
                       alpha=alpha["alpha"])
  try:
    cfg.validate()
    if max(cfg.budgets) > cfg.num_features:
      raise ValueError(f"budgets: every budget must be <= num_features ({cfg.num_features}), "
                       f"got {list(cfg.budgets)}")
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  logging.info("alpha %s; sim config %s", alpha, cfg)
  res = compare.run_comparison(cfg, cf.WORKDIR.value, alpha, _MEASURED.value,
                               seed_noise=_SEED_NOISE.value, log=logging.info)
  for row in res["table"]:
    print(f"{row['source']:32s} beta = {row['beta']:.3f}  "
          f"95% CI [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]")
  print(f"wrote {cf.WORKDIR.value}/results.json, report.html")


if __name__ == "__main__":
  cf.run(main)
