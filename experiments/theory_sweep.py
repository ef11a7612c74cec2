"""Theory sweep: predicted vs simulated vs measured Rosetta-count exponent.

Command (the run recorded in docs/theory.md; ~10 minutes on a 2-core CPU)::

  python -m experiments.theory_sweep --alpha=corpus --features=128 \\
      --budgets=4,6,8,16,32,64 --seeds=4 --steps=3000 --workdir=runs/theory \\
      [--measured=runs/scaling/results.json]

What it shows: alpha is fixed from the embedded corpus's word rank-frequency law
(``--alpha=corpus``) or given as a number, never fitted to Rosetta counts. The
capacity model (theory/capacity.py) predicts the Rosetta-count exponent beta for
the simulation's F and budgets; toy ReLU superposition models are trained over
the budgets (vmapped over seeds) and matched with rosetta_jax.match; the measured
beta of the scaling study is read from --measured. results.json, config.json and
a self-contained report.html (table + plots) are written into --workdir.
"""

from absl import app, flags, logging

from theory import compare, simulate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "output directory", required=True)
flags.DEFINE_list("budgets", ["4", "6", "8", "16", "32", "64"], "neuron budgets N (>= 2)")
flags.DEFINE_string("alpha", "corpus", "utility exponent: a number, or 'corpus' to estimate "
                    "it from the embedded corpus's word rank-frequency law")
flags.DEFINE_string("measured", None, "results.json of the scaling study (optional)")
flags.DEFINE_integer("features", 128, "number of latent features F")
flags.DEFINE_integer("seeds", 4, "models per budget (>= 2)")
flags.DEFINE_integer("steps", 3000, "Adam steps per model")
flags.DEFINE_integer("batch", 1024, "batch size")
flags.DEFINE_integer("probe", 4096, "probe inputs")
flags.DEFINE_float("feature_prob", 0.05, "probability a feature is active")
flags.DEFINE_float("l1", 3e-4, "activation L1 (privileged-basis pressure)")
flags.DEFINE_float("r_min", 0.5, "minimum r of a Rosetta pair")
flags.DEFINE_float("seed_noise", 0.25, "capacity model: run-to-run jitter of log margins")
flags.DEFINE_integer("bootstrap", 100, "bootstrap resamples for beta_sim's CI")
flags.DEFINE_integer("seed", 0, "PRNG seed")


def _budgets(raw) -> tuple[int, ...]:
  try:
    b = tuple(int(x) for x in raw)
  except ValueError:
    raise app.UsageError(f"--budgets must be integers, got {raw}") from None
  if len(b) < 2 or min(b) < 1 or len(set(b)) != len(b):
    raise app.UsageError(f"--budgets needs >= 2 distinct positive integers, got {raw}")
  return tuple(sorted(b))


def _alpha(raw: str) -> dict:
  if raw == "corpus":
    from theory import corpus_stats
    try:
      est = corpus_stats.corpus_alpha("all", ngram=1)
    except (ImportError, FileNotFoundError) as e:
      raise app.UsageError(f"--alpha=corpus needs the embedded corpus ({e}); "
                           "pass a number instead") from None
    return {"alpha": est["alpha"], "ci": est["ci"], "source":
            f"word rank-frequency law of the embedded corpus ({est['num_units']} words, "
            f"ranks 1..{est['rank_max']})"}
  try:
    a = float(raw)
  except ValueError:
    raise app.UsageError(f"--alpha must be a number or 'corpus', got {raw!r}") from None
  if not 0.05 <= a <= 10:
    raise app.UsageError(f"--alpha must be in [0.05, 10], got {a}")
  return {"alpha": a, "ci": [a, a], "source": "given on the command line"}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  budgets = _budgets(FLAGS.budgets)
  if FLAGS.features < 2 or max(budgets) > FLAGS.features:
    raise app.UsageError(f"--features must be >= 2 and >= every budget, got {FLAGS.features}")
  alpha = _alpha(FLAGS.alpha)
  cfg = simulate.SimConfig(
      num_features=FLAGS.features, alpha=alpha["alpha"], feature_prob=FLAGS.feature_prob,
      budgets=budgets, num_seeds=FLAGS.seeds, steps=FLAGS.steps, batch_size=FLAGS.batch,
      probe_size=FLAGS.probe, l1=FLAGS.l1, r_min=FLAGS.r_min, bootstrap=FLAGS.bootstrap,
      seed=FLAGS.seed)
  try:
    cfg.validate()
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  logging.info("alpha %s; sim config %s", alpha, cfg)
  res = compare.run_comparison(cfg, FLAGS.workdir, alpha, FLAGS.measured,
                               seed_noise=FLAGS.seed_noise, log=logging.info)
  for row in res["table"]:
    print(f"{row['source']:32s} beta = {row['beta']:.3f}  "
          f"95% CI [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]")
  print(f"wrote {FLAGS.workdir}/results.json, report.html")


if __name__ == "__main__":
  app.run(main)
