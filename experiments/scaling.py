r"""The main job: do Rosetta neurons grow as a sublinear power law of model size?

    pip install -e . && python -m experiments.scaling --models=zoo --preset=tiny \
        --workdir=runs/tiny

With ``--models=zoo`` it trains the embedded GPT-NeoX zoo (5 widths, 8x neurons,
two seeds each) on the embedded corpus, records every MLP neuron on the held-out
documents, matches the two seeds of each width (mutual nearest neighbours on
Pearson r across all layers), fits count ~ N^beta with a document-bootstrap CI,
and writes ``config.json``, ``results.json`` and ``report.html`` into the workdir.
``tiny`` takes about 2 minutes on an idle 2-core CPU; ``default`` 80 minutes on a
shared one (about 32 on an idle one, from timed parts).

``--models=DIR_A,DIR_B,...`` runs the same study on Hugging Face checkpoints in
local directories (every pair matched; ``A1+A2,B1+B2`` pairs within groups).
Re-running the same command resumes; a workdir holding another config is an error.
The result to look for: beta < 1 with its CI below 1 (the fraction shrinks).
"""

from __future__ import annotations

from absl import app, flags

from experiments import common_flags as cf
from rosetta_jax.studies import scaling as study

_K = flags.DEFINE_integer("k", None, "Mutual-k-NN criterion (default: the preset's, 1).")
_R_MIN = flags.DEFINE_float("r_min", None, "Minimum r of a Rosetta pair.")
_NULL = flags.DEFINE_bool("null_threshold", None,
                          "Require r above the strongest permutation-null pair (default on).")
_NULL_FDR = flags.DEFINE_float(
    "null_fdr", None, "With --null_threshold: keep pairs above the lowest r at which the "
    "null explains at most this fraction of the real pairs (e.g. 0.05) instead of above "
    "the strongest null pair; for large models recorded on few units.")
_RECORD_DOCS = flags.DEFINE_integer("record_docs", None,
                                    "Held-out documents to record (0 = all; evenly spaced).")
_RECORD_CHARS = flags.DEFINE_integer("record_chars", None,
                                     "Characters kept per document (0 = all).")
_RECORD_LEN = flags.DEFINE_integer("record_len", None,
                                   "Tokens per context window when recording (capped by the "
                                   "model's max positions).")
_RECORD_BATCH = flags.DEFINE_integer("record_batch", None, "Windows per recording batch.")


def main(argv):
  if _NULL_FDR.value is not None and not 0 < _NULL_FDR.value < 1:
    raise app.UsageError(f"--null_fdr must lie in (0, 1), got {_NULL_FDR.value}")
  cfg = cf.study_config(argv, k=_K.value, r_min=_R_MIN.value, null_threshold=_NULL.value,
                        null_fdr=_NULL_FDR.value,
                        record_docs=_RECORD_DOCS.value, record_chars=_RECORD_CHARS.value,
                        record_len=_RECORD_LEN.value, record_batch=_RECORD_BATCH.value)
  res = study.run_scaling(cfg, cf.WORKDIR.value, cf.MODELS.value, progress=cf.PROGRESS.value)
  if res["fit"]:
    fit = res["fit"]["count"]
    print(f"beta = {fit['beta']:.3f}  95% CI [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]")
  print(f"counts {res['counts']} at N = {[int(s) for s in res['sizes']]}")
  print(f"wrote {cf.WORKDIR.value}/results.json and {cf.WORKDIR.value}/report.html")


if __name__ == "__main__":
  app.run(main)
