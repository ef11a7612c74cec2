"""README.md and docs/ agree with docs/results/*.json, and the renderer notices when not."""
import glob
import json
import os
import re

import pytest

from rosetta_jax.report import docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_page_matches_its_results_files(page):
  text = open(page).read()
  assert docs.render_text(text, RESULTS, where=page) == text, (
      f"{os.path.relpath(page, ROOT)} disagrees with docs/results: run "
      "`python -m experiments.render_docs`")


def test_rendered_files_carry_their_run():
  """Every file a page renders from names its machine and holds the results."""
  used = {m.group("file") for p in PAGES for m in docs.BLOCK.finditer(open(p).read())}
  assert used
  for name in used:
    s = json.load(open(os.path.join(RESULTS, name + ".json")))
    assert s["machine"] and "results" in s and s["date"], name


def test_the_headline_pages_are_rendered():
  """README.md and docs/scaling.md carry the tiny zoo's numbers as rendered blocks."""
  want = {"README.md": {"headline", "baselines", "sensitivity"},
          "docs/scaling.md": {"headline", "pairs", "sizes", "sensitivity", "budgets",
                              "baselines"}}
  for page, templates in want.items():
    names = {m.group("file") + ":" + m.group("template")
             for m in docs.BLOCK.finditer(open(os.path.join(ROOT, page)).read())}
    assert {f"scaling_tiny:{t}" for t in templates} <= names, page


def test_every_results_file_has_its_command_and_commit():
  files = glob.glob(os.path.join(RESULTS, "*.json"))
  assert files
  for f in files:
    s = json.load(open(f))
    assert s["command"].startswith("python "), f
    assert re.fullmatch(r"[0-9a-f]{7,40}", s["commit"]), f


def _summary(beta):
  head = {"beta": beta, "ci": [beta - 0.1, beta + 0.1], "resamples": "documents only",
          "regression_ci": [beta - 0.5, beta + 0.5], "sizes": [64.0, 128.0],
          "counts": [10.0, 18.0], "count_ci": [[8, 12], [15, 21]]}
  return {"command": "python -m experiments.scaling --preset=x", "commit": "abc1234",
          "machine": "m", "date": "2026-01-01", "seconds": 60.0,
          "results": {"headline": head, "criterion_name": "mutual 1-NN, FDR q=0.05",
                      "descriptive": "", "converged": {"verdict": "not converged: because"},
                      "counts": [10, 18], "sensitivity": {"raw mutual NN": head},
                      "budgets": {"1": head}, "budget_units": {"1": 500},
                      "leave_one_model_out": {"a": 0.8, "b": 0.9},
                      "pairs": [{"label": "w16-s0s1", "neurons_a": 64, "count": 10,
                                 "count_ci": [8, 12], "false_positives": 0.25,
                                 "raw_count": 30, "null_count": 20.5, "r_threshold": 0.31,
                                 "identity": {"count": 4}}]}}


def test_render_detects_a_changed_file(tmp_path):
  page = tmp_path / "page.md"
  body = ("intro\n<!-- results:run:headline -->\nold text\n<!-- /results -->\n"
          "<!-- results:run:pairs -->\n<!-- /results -->\nend\n")
  page.write_text(body)
  (tmp_path / "run.json").write_text(json.dumps(_summary(0.812)))
  assert docs.render_file(str(page), str(tmp_path), check=True)    # stale: not written
  assert page.read_text() == body
  assert docs.render_file(str(page), str(tmp_path))
  text = page.read_text()
  assert "beta = 0.812, 95% CI [0.712, 0.912]" in text and "Not converged: because" in text
  assert "| w16-s0s1 | 64 | 10 | [8, 12] | 0.25 | 30 | 20.5 | 0.310 | 4 |" in text
  assert text.startswith("intro\n") and text.endswith("end\n")
  assert not docs.render_file(str(page), str(tmp_path), check=True)  # now up to date
  (tmp_path / "run.json").write_text(json.dumps(_summary(0.9)))
  assert docs.render_file(str(page), str(tmp_path), check=True)


def test_missing_file_and_unknown_template_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothere.json"):
    docs.render_text("<!-- results:nothere:pairs -->\n<!-- /results -->", str(tmp_path))
  (tmp_path / "run.json").write_text(json.dumps(_summary(0.8)))
  with pytest.raises(KeyError, match="unknown results template 'nope'"):
    docs.render_text("<!-- results:run:nope -->\n<!-- /results -->", str(tmp_path))
