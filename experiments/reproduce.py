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

from absl import app, flags, logging

from experiments import common_flags as cf
from rosetta_jax.studies import reproduce as study

_THEORY = flags.DEFINE_enum("theory", None, ["micro", "tiny", "default"],
                            "Theory sweep size (default: the preset's, tiny for tiny).")
_NO_THEORY = flags.DEFINE_bool("skip_theory", False, "Skip the theory comparison.")
_NO_FILTER = flags.DEFINE_bool("skip_data_filter", False,
                               "Skip the data-filtering study (claim 6; zoo only).")


def main(argv):
  cfg = cf.study_config(argv)
  theory = None if _NO_THEORY.value else (
      _THEORY.value or ("default" if cf.PRESET.value != "tiny" else "tiny"))
  res = study.run_reproduce(cfg, cf.WORKDIR.value, cf.MODELS.value, progress=cf.PROGRESS.value,
                            theory=theory, log=logging.info,
                            data_filter=not _NO_FILTER.value)
  for r in res["summary"]:
    print(f"{r['claim']:75s} {r['measured']:24s} {r['ci']:18s} {r['agrees']}")
  print(f"wrote {cf.WORKDIR.value}/reproduce/results.json and report.html")


if __name__ == "__main__":
  app.run(main)
