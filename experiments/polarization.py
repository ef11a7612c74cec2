r"""Claim 2, neuron polarization: are Rosetta neurons more selective, and more so with size?

    python -m experiments.polarization --models=zoo --preset=tiny --workdir=runs/tiny

For every size (the two seeds of one zoo width, or a pair of --models) it computes
per-neuron kurtosis, Hoyer sparsity, activation frequency, domain selectivity,
top-unit domain/token entropy and a token+domain explanation score (streamed over
the stored activations), then AUROC and Cohen's d of Rosetta vs non-Rosetta
neurons with document-bootstrap CIs, and the slope of d against ln N with its CI.
About 1 minute after the scaling study on the tiny preset (2 CPU cores). The result
to look for: d > 0 and a positive slope whose CI excludes 0.

With ``--modality=vision`` it runs on the vision zoo's seed pairs, a class being
a domain and a grid cell a unit's "token" (docs/vision.md).
Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``results.json`` and
``report.html`` go to ``<workdir>/polarization/``. Re-running
resumes; a workdir holding another config is an error.
"""
from __future__ import annotations

from absl import flags

from experiments import common_flags as cf
from rosetta_jax.studies import context, registry

cf.define_study_flags()
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(cf.config_lib)


def main(argv):
  ctx = context.load_context(cf.study_config(argv), cf.WORKDIR.value, cf.models(),
                             progress=cf.PROGRESS.value, mesh=cf.study_mesh())
  context.free_weights(ctx)
  res = registry.run_study("polarization", ctx)
  for m, t in res.trend.items():
    d = t["d"]
    print(f"{m:14s} d slope per ln N {d['slope']:+.3f}  95% CI [{d['ci'][0]:+.3f}, "
          f"{d['ci'][1]:+.3f}]")
  for name, trends in (("matched control", res.trend_control),
                       ("null-paired neurons", res.trend_null)):
    for m, t in trends.items():
      d = t["delta"]
      print(f"{m:14s} Cliff's delta vs {name}, slope per ln N {d['slope']:+.3f}  "
            f"95% CI [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
  print(f"wrote {cf.WORKDIR.value}/polarization/results.json and report.html")
  cf.finish(ctx, res)


if __name__ == "__main__":
  cf.run(main)
