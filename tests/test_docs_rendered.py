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


def test_the_theory_page_is_rendered():
  """docs/theory.md's tables, measured side and verdict are rendered blocks of the theory
  results, and their measured side is the current scaling summary's (per size, with its
  model-and-document intervals)."""
  blocks = {m.group("file") + ":" + m.group("template")
            for m in docs.BLOCK.finditer(open(os.path.join(ROOT, "docs/theory.md")).read())}
  want = {"theory_variants:" + t for t in (
      "source", "theory_rules", "theory_measured", "theory_predicted_tokens",
      "theory_oos_tokens", "theory_predicted_words", "theory_oos_words", "theory_verdict")}
  assert want | {"theory_zoo_sim:source", "theory_zoo_sim:theory_zoo_sim"} <= blocks
  theory = json.load(open(os.path.join(RESULTS, "theory_variants.json")))
  scaling = json.load(open(os.path.join(RESULTS, "scaling_tiny.json")))
  head = scaling["results"]["headline"]
  for rule in theory["results"]["rules"].values():
    m = rule["measured"]
    assert (m["sizes"], m["counts"], m["count_ci"]) == (head["sizes"], head["counts"],
                                                        head["count_ci"])
    assert m["beta"] == head["beta"] and m["source"]["commit"] == scaling["commit"]


def _theory_summary():
  m = {"sizes": [64.0, 128.0, 256.0], "counts": [10.0, 18.0, 30.0],
       "count_ci": [[8.0, 12.0], [15.0, 21.0], [25.0, 33.0]], "beta": 0.79,
       "beta_ci": [0.7, 0.9], "path": "docs/results/x.json",
       "source": {"command": "python -m experiments.scaling", "commit": "abc1234",
                  "date": "2026-01-01"}}
  score = {"predicted": [31.5], "in_interval": [True], "error_in_half_widths": [0.5],
           "rms_log_error": 0.049}
  fitted = {"beta": 0.8, "counts": [10.1, 17.9, 31.5], "physical": {"n_c": 150.0},
            "score": score, "bootstrap": {"beta_ci": [0.75, 0.85], "physical_ci":
                                          {"n_c": [120.0, 180.0]},
                                          "counts_ci": [[9, 11], [16, 19], [28, 35]],
                                          "rms_log_error_range": [0.01, 0.2],
                                          "beats_line": 0.97}}
  rule = {"fixed": {"alpha": 1.0, "alpha_ci": [0.9, 1.1], "num_features": 100.0,
                    "num_units": 5000, "text": "given"}, "measured": m, "n_fit": 2,
          "resample": {"reps": 20, "rule": "split normal"},
          "variants": {"concave": {"apriori": {"beta": 1.2, "beta_ci": [1.1, 1.3],
                                               "counts": [5.0, 11.0, 24.0]},
                                   "fit_all": fitted, "out_of_sample": fitted}},
          "power_law": {"beta": 0.85, "counts": [10.0, 18.0, 32.4],
                        "score": {**score, "predicted": [32.4], "rms_log_error": 0.077},
                        "bootstrap": {"beta_ci": [0.6, 1.1],
                                      "counts_ci": [[9, 11], [16, 20], [26, 40]],
                                      "rms_log_error_range": [0.02, 0.3]}},
          "verdict": {"rule": "the rule", "fits": ["concave"], "text": "fits: concave",
                      "mechanisms": {"concave": {"apriori": False, "out_of_sample": True,
                                                 "fits": True, "beats_line": 0.97}}}}
  return {"command": "python -m experiments.theory_sweep", "commit": "abc1234",
          "machine": "m", "date": "2026-01-01", "seconds": 1.0,
          "results": {"rules": {"tokens": rule}}}


def test_theory_templates_render_their_numbers(tmp_path):
  (tmp_path / "t.json").write_text(json.dumps(_theory_summary()))
  page = ("<!-- results:t:theory_predicted_tokens -->\n<!-- /results -->\n"
          "<!-- results:t:theory_oos_tokens -->\n<!-- /results -->\n"
          "<!-- results:t:theory_verdict -->\n<!-- /results -->\n"
          "<!-- results:t:theory_measured -->\n<!-- /results -->\n")
  text = docs.render_text(page, str(tmp_path))
  assert "| measured | 0.790 [0.700, 0.900] | 10.0 [8.0, 12.0] | 18.0 [15.0, 21.0] |" in text
  assert "| concave, a priori | 1.200 [1.100, 1.300] | 5.0 | 11.0 | 24.0 |" in text
  assert "| concave, fit to all 3 | 0.800 [0.750, 0.850] | 10.1 [9.0, 11.0] |" in text
  assert ("| concave | n_c 150 [120, 180] | 0.800 [0.750, 0.850] | 31.5 [28.0, 35.0] "
          "(+0.5, in CI) | 0.049 [0.010, 0.200] | 97% |") in text
  assert "| power law | beta 0.85 [0.6, 1.1] | 0.850 [0.600, 1.100] | 32.4 [26.0, 40.0]" in text
  assert "| concave | yes | yes | 97% | **yes** |" not in text       # a priori failed
  assert "| concave | no | yes | 97% | **yes** |" in text
  assert "**Verdict (declared `tokens` rule): fits: concave.**" in text
  assert "`docs/results/x.json` (written by `python -m experiments.scaling`, commit abc1234" in text


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
