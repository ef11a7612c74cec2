"""Builds (or rebuilds) a run's explorer page from the inputs its studies saved.

Command::

    python -m experiments.explore --workdir=runs/tiny

reads ``runs/tiny/explorer/inputs/`` (written by ``rosetta_jax.explorer.save_inputs``:
rows, store directories, unit texts, vocabulary projections; docs/explorer.md)
and writes ``runs/tiny/explorer/index.html`` with its card shards: one offline
page listing every Rosetta pair, null pair, control and anchor. Open it from
disk in any browser, or with ``rj.explore("runs/tiny")``. On the tiny zoo run
(702 rows over 20 sites, 73,691 units) the build takes about 20 s on 2 CPU
cores; docs/explorer.md shows the page and its measured size at 20,000 pairs.

``--export='L3 N59'`` (a query, a row id, or ``all``) also writes that card as
JSON or Parquet (``--export_format``) into ``--export_dir``.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's workdir (holding explorer/inputs).",
                    required=True)
flags.DEFINE_integer("top_k", 10, "Top-activating contexts per neuron.")
flags.DEFINE_integer("bands", 4, "Activation bands sampled below the top.")
flags.DEFINE_integer("samples_per_band", 4, "Contexts sampled per band.")
flags.DEFINE_integer("before", 8, "Units of context before the marked unit.")
flags.DEFINE_integer("after", 3, "Units of context after the marked unit.")
flags.DEFINE_string("title", None, "Page title (default: the one the study saved).")
flags.DEFINE_string("export", None, "Export a card: a query ('L3 N59'), a row id, or 'all'.")
flags.DEFINE_enum("export_format", "json", ["json", "parquet"], "Export format.")
flags.DEFINE_string("export_dir", None, "Export directory (default <workdir>/explorer/export).")
flags.DEFINE_bool("open", False, "Open the page in a web browser when done.")
flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rosetta_jax import explorer

  cfg = explorer.CardConfig(top_k=FLAGS.top_k, bands=FLAGS.bands,
                            samples_per_band=FLAGS.samples_per_band, before=FLAGS.before,
                            after=FLAGS.after, hist_bins=10 * FLAGS.bands)
  over = {"title": FLAGS.title} if FLAGS.title else {}
  summary = explorer.build_workdir(FLAGS.workdir, config=cfg, progress=FLAGS.progress, **over)
  print(json.dumps({"index_html": summary.index_html, "rows": summary.rows,
                    "index_bytes": summary.index_bytes, "cards_bytes": summary.cards_bytes,
                    "seconds": round(summary.seconds, 2)}, indent=1))
  ex = explorer.open_explorer(summary.path)
  if FLAGS.export:
    out = FLAGS.export_dir or os.path.join(summary.path, "export")
    ext = "json" if FLAGS.export_format == "json" else "parquet"
    if FLAGS.export == "all":
      paths = ex.export_all(out, FLAGS.export_format)
    else:
      os.makedirs(out, exist_ok=True)
      rid = (ex.find(FLAGS.export) or [None])[0]
      if rid is None:
        raise app.UsageError(f"--export={FLAGS.export!r} matches no row")
      paths = [ex.export(rid, os.path.join(out, f"{rid}.{ext}"), FLAGS.export_format)]
    print(f"exported {len(paths)} card(s) to {out}")
  if FLAGS.open:
    ex.open()


if __name__ == "__main__":
  app.run(main)
