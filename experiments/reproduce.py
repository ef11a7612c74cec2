r"""Every claim in one report: scaling, polarization, domains/depth, null/ablation, theory,
data filtering.

    python -m experiments.reproduce --models=zoo --preset=tiny --workdir=runs/tiny

Runs experiments.scaling (outputs at the workdir's top level), then the
polarization, domains and null/ablation studies on the same zoo, stores and pairs,
the theory comparison (``theory.compare``, a preset-sized sweep) into
<workdir>/theory, the data-filtering case study into <workdir>/data_filter
(zoo only; ``--skip_data_filter`` to leave it out), and writes <workdir>/reproduce/report.html: a summary table
(claim, measured value, 95% CI, agrees or not) and one section per claim.
tiny: about 12 minutes on 2 CPU cores (most of it training the zoo); default:
over an hour.

Shares ``--workdir`` with ``experiments.scaling`` (zoo, activation stores and
Rosetta pairs are reused, or made if missing); this study's ``config.json``,
``results.json`` and ``report.html`` go to ``<workdir>/reproduce/``. Re-running
resumes; a workdir holding another config is an error.
"""
from __future__ import annotations

from absl import flags, logging

from experiments import common_flags as cf
from rosetta_jax.studies import context, reproduce, theory

cf.define_study_flags()
cf.config_lib.define_flags(cf.config_lib.FilterConfig)
flags.adopt_module_key_flags(cf)
flags.adopt_module_key_flags(cf.config_lib)
_THEORY = flags.DEFINE_enum("theory", None, ["micro", "tiny", "default"],
                            "Theory sweep preset (default: the study preset's; tiny for tiny).")
_NO_THEORY = flags.DEFINE_bool("skip_theory", False, "Skip the theory comparison.")
_NO_FILTER = flags.DEFINE_bool("skip_data_filter", False,
                               "Skip the data-selection study (claim 6; zoo only).")


def main(argv):
  cfg = cf.study_config(argv)
  fcfg = cf.config_lib.apply_flags(cf.config_lib.FilterConfig())
  studies = [s for s in reproduce.ORDER
             if not (s == "theory" and _NO_THEORY.value)
             and not (s == "data_filter" and (_NO_FILTER.value or cf.models() != "zoo"))]
  configs = {"data_filter": fcfg}
  if "theory" in studies:
    configs["theory"] = theory.default_config(
        _THEORY.value or ("default" if cf.PRESET.value != "tiny" else "tiny"))
  ctx = context.load_context(cfg, cf.WORKDIR.value, cf.models(), progress=cf.PROGRESS.value,
                             mesh=cf.study_mesh())
  res = reproduce.run(ctx, studies, configs, log=logging.info)
  reproduce.write(ctx, res)
  for r in res.summary:
    print(f"{r[0]:75s} {r[1]:24s} {r[2]:18s} {r[3]}")
  print(f"wrote {cf.WORKDIR.value}/reproduce/results.json and report.html")
  cf.finish(ctx, res)


if __name__ == "__main__":
  cf.run(main)
