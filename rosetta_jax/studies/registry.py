"""The studies by name, and the one way to run one and write its outputs.

Every study module exposes ``NAME``, ``TITLE``, ``OUTPUT`` (its folder in the
workdir; "" for the workdir itself), ``run(ctx, cfg) -> Result`` (a dataclass
with ``to_json()``), ``claims(result)`` (its rows of the summary table) and
``section(report, result)``. A study with settings of its own (data selection's
``FilterConfig``, the theory sweep's ``SimConfig``) keeps them in its folder's
``config.json``, checked like the pipeline's.
"""

from __future__ import annotations

import os

from rosetta_jax import io as io_lib
from rosetta_jax.report.html import Report
from rosetta_jax.studies import config as config_lib
from rosetta_jax.studies import context as context_lib
from rosetta_jax.studies import datafilter, domains, null_ablation, polarization, scaling, theory

STUDIES = {m.NAME: m for m in (scaling, polarization, domains, null_ablation, theory,
                               datafilter)}

VISION_STUDIES = ("scaling", "polarization")   # the studies --modality=vision runs


def output_dir(ctx: context_lib.Context, name: str) -> str:
  return os.path.join(ctx.workdir, STUDIES[name].OUTPUT)


def run_study(name: str, ctx: context_lib.Context, cfg=None, write: bool = True):
  """Runs study ``name`` on the context; writes its results.json and report.html."""
  if name not in STUDIES:
    raise config_lib.ConfigError(f"study: unknown study {name!r}; known: {sorted(STUDIES)}")
  modality = getattr(getattr(ctx, "cfg", None), "modality", "text")   # the theory study:
  if modality != "text" and name not in VISION_STUDIES:                 # no pipeline config
    raise config_lib.ConfigError(f"modality: the {name} study runs on text only; "
                                 f"--modality={modality} runs {sorted(VISION_STUDIES)}")
  study = STUDIES[name]
  out = output_dir(ctx, name)
  own = None
  if cfg is not None and study.OUTPUT and not isinstance(cfg, config_lib.StudyConfig):
    own = config_lib.workdir_record(name, ctx.models, cfg)
    config_lib.check_workdir(out, own)
  result = study.run(ctx, cfg)
  if write:
    os.makedirs(out, exist_ok=True)
    if own is not None:
      config_lib.write_workdir_config(out, own)
    io_lib.write_json(os.path.join(out, "results.json"), result.to_json())
    rep = Report(study.TITLE)
    study.section(rep, result)
    rep.section("Run")
    rep.table(["stage", "seconds"], [[k, v] for k, v in getattr(result, "seconds", {}).items()])
    rep.write(os.path.join(out, "report.html"))
  return result
