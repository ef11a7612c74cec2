"""Theory sweep: predicted vs simulated vs measured Rosetta-count exponent.

Command (the run recorded in docs/theory.md; ~10 minutes on a 2-core CPU)::

  python -m experiments.theory_sweep --preset=default --alpha=corpus \\
      --workdir=runs/theory [--measured=runs/scaling/results.json]

``--preset`` is one of ``theory.simulate.PRESETS`` (micro, tiny, default, paper);
every field of ``SimConfig`` is a flag (``--num_features``, ``--budgets``,
``--num_seeds``, ``--steps``, ...), ``--config`` reads a saved config.json.

The mechanism variants at the measured sizes (docs/theory.md sections 3-5, 7, 8;
minutes on a 2-core CPU, most of it the tokens rule's corpus pass; reads the scaling
study's summary or any scaling results.json)::

  python -m experiments.theory_sweep --sim=false --measured=docs/results/scaling_tiny.json \\
      --variants_out=docs/results/theory_variants.json --regime_png=docs/theory_regime.png \\
      --workdir=runs/theory_variants --reps=200

A simulation in the zoo's regime (section 6; resumes budget by budget from --workdir):
``zoo_size_cpu`` (F = 8192, N <= 512, declared criterion) takes about 11 minutes on a
shared 2-core CPU; ``zoo`` is the full F = 8192, N <= 1024 size, hours on a CPU::

  python -m experiments.theory_sweep --sim=false --zoo_sim=zoo_size_cpu \\
      --zoo_sim_out=docs/results/theory_zoo_sim.json --workdir=runs/theory_zoo

Both JSON files are docs summaries (command, commit, machine, date, wall time;
``report.docs.write_summary``); ``python -m experiments.render_docs`` renders
docs/theory.md from them.

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
_SIM = flags.DEFINE_bool("sim", True, "Run the toy sweep and the capacity comparison.")
_VARIANTS_OUT = flags.DEFINE_string(
    "variants_out", None, "With --measured: write the mechanism variants at the measured sizes "
    "(theory.predict.run_all: a priori, fitted, out-of-sample) to this JSON.")
_REGIME_PNG = flags.DEFINE_string("regime_png", None, "With --variants_out: the regime map PNG.")
_TOKENIZER_DIR = flags.DEFINE_string(
    "tokenizer_dir", None, "The zoo's tokenizer for the token rule (default: the zoo/ folder "
    "beside --measured when it has one, else a BPE trained as the zoo trains its own).")
_ZOO_SIM = flags.DEFINE_string(
    "zoo_sim", None, "Run a simulation in the zoo's regime (a theory.simulate.ZOO_PRESETS "
    "name: zoo_smoke, zoo_cpu, zoo) into --workdir/zoo_sim (resumes budget by budget) and write "
    "it beside the variants' predictions to --zoo_sim_out.")
_ZOO_SIM_OUT = flags.DEFINE_string("zoo_sim_out", None, "JSON for --zoo_sim.")
_N_FIT = flags.DEFINE_integer("n_fit", 3, "Out-of-sample test: sizes fitted (the smallest).")
_REPS = flags.DEFINE_integer("reps", 200, "Bootstrap resamples of the measured counts for the "
                             "fitted variants' intervals (theory.bootstrap.RESAMPLE_RULE).")


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
  if _VARIANTS_OUT.value:
    if not _MEASURED.value:
      raise config_lib.ConfigError("variants_out: needs --measured (a scaling results.json)")
    _variants(_MEASURED.value, _VARIANTS_OUT.value)
  if _ZOO_SIM.value:
    _zoo_sim(_ZOO_SIM.value, _ZOO_SIM_OUT.value)
  if not _SIM.value:
    return
  logging.info("alpha %s; sim config %s", alpha, cfg)
  res = compare.run_comparison(cfg, cf.WORKDIR.value, alpha, _MEASURED.value,
                               seed_noise=_SEED_NOISE.value, log=logging.info)
  for row in res["table"]:
    print(f"{row['source']:32s} beta = {row['beta']:.3f}  "
          f"95% CI [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]")
  print(f"wrote {cf.WORKDIR.value}/results.json, report.html")


def _write(out: str, res: dict, start: float) -> None:
  """``res`` as a docs summary (command, commit, machine, date, wall time: report.docs)."""
  import sys, time  # pylint: disable=g-import-not-at-top,multiple-imports
  from rosetta_jax.report import docs  # pylint: disable=g-import-not-at-top
  docs.write_summary(out, res, ["experiments/theory_sweep.py", *sys.argv[1:]],
                     seconds=round(time.time() - start, 1))


def _zoo_sim(preset: str, out: str | None) -> None:
  import os, time  # pylint: disable=g-import-not-at-top,multiple-imports
  from theory import predict, simulate  # pylint: disable=g-import-not-at-top
  start = time.time()
  if preset not in simulate.ZOO_PRESETS:
    raise config_lib.ConfigError(f"zoo_sim: one of {sorted(simulate.ZOO_PRESETS)}, got {preset!r}")
  res = predict.zoo_simulation(preset, os.path.join(cf.WORKDIR.value, "zoo_sim", preset),
                               log=logging.info)
  sim = res["simulated"]
  print(f"zoo-regime simulation {preset}: beta_sim {sim['beta_sim']:.3f} {sim['beta_sim_ci']}")
  for name, p in res["predicted"].items():
    print(f"  {name:17s} a priori beta {p['beta']:.3f}")
  if out:
    _write(out, res, start)
    print(f"wrote {out}")


def _variants(measured: str, out: str) -> None:
  import os, time  # pylint: disable=g-import-not-at-top,multiple-imports
  from theory import predict  # pylint: disable=g-import-not-at-top
  start = time.time()
  tok = _TOKENIZER_DIR.value
  beside = os.path.join(os.path.dirname(os.path.abspath(measured)), "zoo")
  if tok is None and os.path.exists(os.path.join(beside, "tokenizer.json")):
    tok = beside
  res = predict.run_all(measured, tokenizer_dir=tok, png=_REGIME_PNG.value, n_fit=_N_FIT.value,
                        reps=_REPS.value, log=logging.info)
  _write(out, res, start)
  for rule, r in res["rules"].items():
    print(f"[{rule}] alpha {r['fixed']['alpha']:.3f}, F {r['fixed']['num_features']:g}; "
          f"measured beta {r['measured']['beta']:.3f}")
    for name, v in r["variants"].items():
      print(f"  {name:17s} a priori beta {v['apriori']['beta']:.3f}  out-of-sample rms log err "
            f"{v['out_of_sample']['score']['rms_log_error']:.3f}")
    print(f"  power law         out-of-sample rms log err "
          f"{r['power_law']['score']['rms_log_error']:.3f}")
  print(f"wrote {out}")


if __name__ == "__main__":
  cf.run(main)
