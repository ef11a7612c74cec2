r"""The main job: do Rosetta neurons grow as a sublinear power law of model size?

    pip install -e . && python -m experiments.scaling --models=zoo --preset=tiny \
        --workdir=runs/tiny

With ``--models=zoo`` it trains the embedded GPT-NeoX zoo (5 widths, 8x neurons,
two seeds each) on the embedded corpus, records every MLP neuron on the held-out
documents, matches the two seeds of each width (mutual nearest neighbours on
Pearson r across all layers), fits count ~ N^beta with a document-bootstrap CI,
and writes ``config.json``, ``results.json`` and ``report.html`` into the workdir.
Timings are in docs/scaling.md. Every field of ``StudyConfig``
(``rosetta_jax/studies/config.py``) is a flag (``--bootstrap``, ``--k``,
``--null_fdr``, ``--zoo_steps``, ...); ``--helpshort`` lists them.

``--modality=vision`` (with ``--models=zoo``) runs it on the vision zoo instead:
ViT classifiers at 5 widths x 3 seeds and a one-step MeanFlow generator trained on
the embedded Fashion-MNIST images, every model recorded on the generator's images
on one canonical patch grid; it adds the generator against each discriminator and
the generator's anchors (docs/vision.md).

``--models=DIR_A,DIR_B,...`` runs the same study on Hugging Face checkpoints in
local directories (every pair matched; ``A1+A2,B1+B2`` pairs within groups).
Re-running the same command resumes; a workdir holding another config is an error.
The result to look for: beta < 1 with its CI below 1 (the fraction shrinks).
"""
from __future__ import annotations

from absl import flags

from experiments import common_flags as cf
from rosetta_jax.studies import context, registry

cf.define_study_flags()
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(cf.config_lib)


def main(argv):
  cfg = cf.study_config(argv)
  ctx = context.load_context(cfg, cf.WORKDIR.value, cf.models(), progress=cf.PROGRESS.value,
                             mesh=cf.study_mesh())
  context.free_weights(ctx)          # matching reads the stores: the weights can go
  res = registry.run_study("scaling", ctx)
  from rosetta_jax.studies import scaling  # pylint: disable=g-import-not-at-top
  print(f"criterion: {scaling.criterion_name(res.criterion)}")
  if res.fit:
    print(f"beta = {res.fit.beta:.3f}  95% CI [{res.fit.ci[0]:.3f}, {res.fit.ci[1]:.3f}] "
          f"(resampling {res.headline.resamples})"
          + (f"; descriptive: {res.descriptive}" if res.descriptive else ""))
  for p in res.pairs:
    ident = f", unit-identity null {p.identity['count']}" if p.identity else ""
    print(f"  {p.label}: {p.count} [{p.count_ci[0]:.0f}, {p.count_ci[1]:.0f}], est. false "
          f"positives {p.false_positives:.2f}{ident}")
  for name, f in res.sensitivity.items():
    print(f"  {name:>18}: beta = " + ("-" if f.beta is None else
                                       f"{f.beta:.3f} [{f.ci[0]:.3f}, {f.ci[1]:.3f}]"))
  if res.untrained_fit is not None:
    u = res.untrained_fit
    print(f"untrained: counts {[p.count for p in res.untrained]}"
          + (f", beta = {u.beta:.3f}" if u.beta is not None else ""))
  if res.generator_pairs:
    g, gf = res.generator_pairs, res.generator_fit
    print(f"generator {g[0].model_a} vs each discriminator: counts "
          f"{[p.count for p in g]}" + (f", beta = {gf.beta:.3f} [{gf.ci[0]:.3f}, "
                                       f"{gf.ci[1]:.3f}]" if gf and gf.fit else ""))
    a = res.generator_anchors
    print(f"generator anchors (a partner in all {a['partners']} discriminators): "
          f"{a['count']} [{a['count_ci'][0]:.0f}, {a['count_ci'][1]:.0f}]")
  print(res.converged["verdict"])
  print(f"wrote {cf.WORKDIR.value}/results.json and {cf.WORKDIR.value}/report.html")
  cf.finish(ctx, res)


if __name__ == "__main__":
  cf.run(main)
