"""studies/config.py: validation, derived flags, the workdir guard and its write order."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

from rosetta_jax.match.rosetta import Criterion
from rosetta_jax.studies import config, context
from rosetta_jax.zoo import vision as Z
from rosetta_jax.zoo.config import ZooConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = config.StudyConfig(
    zoo=ZooConfig(widths=(16, 32), num_layers=1, vocab_size=300, seq_len=32, batch_size=8,
                  steps=20, warmup=2, ckpt_every=10),
    record_docs=12, record_chars=200, record_len=32, bootstrap=8, candidates=2,
    null_permutations=2, budgets=(), untrained=False, identity_null=False)


@pytest.mark.parametrize("field,value,message", [
    ("record_docs", -1, "record_docs: must be an integer >= 0"),
    ("record_docs", 2, "record_docs: needs at least 4 documents"),
    ("record_chars", -5, "record_chars: must be an integer >= 0"),
    ("k", 1.5, "k: must be an integer >= 1, got 1.5"),
    ("bootstrap", 1, "bootstrap: must be an integer >= 2"),
    ("r_min", 2.0, r"r_min: a correlation must lie in \[-1, 1\]"),
    ("null_fdr", 1.0, r"null_fdr: must lie in \(0, 1\)"),
    ("pooling", "median", "pooling: must be one of"),
    ("depths", (0.5, 1.2), r"depths: must be numbers in \[0, 1\]"),
])
def test_study_config_refuses_bad_values(field, value, message):
  with pytest.raises(config.ConfigError, match=message):
    dataclasses.replace(MICRO, **{field: value})


def test_record_config_refuses_bad_values():
  with pytest.raises(config.ConfigError, match="max_docs: must be an integer >= 0"):
    config.RecordConfig(model="m", max_docs=-1)
  with pytest.raises(config.ConfigError, match="batch_size: must be an integer >= 1"):
    config.RecordConfig(model="m", batch_size=0)
  # The declared default: mutual best buddies, FDR q = 0.05 over 8 permutations.
  assert config.StudyConfig().criterion == Criterion(k=1, null="fdr", q=0.05, permutations=8)
  assert dataclasses.replace(MICRO, null_fdr=None).criterion.null == "max"
  assert dataclasses.replace(MICRO, null_threshold=False).criterion.q is None
  with pytest.raises(config.ConfigError, match="null_permutations: must be an integer >= 1"):
    dataclasses.replace(MICRO, null_permutations=0)
  with pytest.raises(config.ConfigError, match=r"budgets: must be document fractions"):
    dataclasses.replace(MICRO, budgets=(0.5, 1.0))


def test_flags_are_derived_from_every_field():
  fv = flags.FlagValues()
  names = config.define_flags(config.StudyConfig, flag_values=fv)
  leaves = [f.name for f in dataclasses.fields(config.StudyConfig)
            if f.name not in ("zoo", "vision_zoo")]
  leaves += [f"zoo_{f.name}" for f in dataclasses.fields(ZooConfig)]
  sched = [f.name for f in dataclasses.fields(Z.Schedule)]
  leaves += [f"vision_zoo_{f.name}" for f in dataclasses.fields(Z.VisionZooConfig)
             if f.name not in ("schedule", "generator")]
  leaves += [f"vision_zoo_schedule_{n}" for n in sched]
  leaves += [f"vision_zoo_generator_{f.name}" for f in dataclasses.fields(Z.GeneratorConfig)
             if f.name != "schedule"]
  leaves += [f"vision_zoo_generator_schedule_{n}" for n in sched]
  assert sorted(names) == sorted(leaves)
  assert "resamples" in fv["bootstrap"].help       # the docstring's line is the help
  fv(["prog", "--bootstrap=7", "--depths=0,0.5", "--r_min=none", "--zoo_steps=5",
      "--nonull_threshold"])
  cfg = config.apply_flags(MICRO, flag_values=fv)
  assert cfg == dataclasses.replace(MICRO, bootstrap=7, depths=(0.0, 0.5), null_threshold=False,
                                    zoo=dataclasses.replace(MICRO.zoo, steps=5))
  # The vision zoo's nested flags, down to its (optional) generator's schedule.
  fv3 = flags.FlagValues()
  config.define_flags(config.StudyConfig, flag_values=fv3)
  fv3(["prog", "--vision_zoo_generator_schedule_steps=7", "--vision_zoo_widths=8,16"])
  vis = config.apply_flags(config.VISION_PRESETS["tiny"], flag_values=fv3)
  assert vis.vision_zoo.generator.schedule.steps == 7 and vis.vision_zoo.widths == (8, 16)
  assert vis.vision_zoo.generator.hidden_size == 48 and vis.modality == "vision"
  fv2 = flags.FlagValues()
  config.define_flags(config.StudyConfig, flag_values=fv2)
  fv2(["prog", "--r_min=0.3"])
  assert config.apply_flags(MICRO, flag_values=fv2).r_min == 0.3
  with pytest.raises(ValueError, match="defined twice"):
    config.define_flags(config.StudyConfig, flag_values=fv2)


def test_workdir_guard_names_fields_and_refuses_old_formats(tmp_path):
  rec = config.workdir_record("pipeline", "zoo", MICRO)
  assert not config.check_workdir(str(tmp_path), rec)
  config.write_workdir_config(str(tmp_path), rec)
  assert config.check_workdir(str(tmp_path), rec)
  other = config.workdir_record("pipeline", "zoo", dataclasses.replace(
      MICRO, bootstrap=9, zoo=dataclasses.replace(MICRO.zoo, steps=21)))
  with pytest.raises(config.ConfigError) as e:
    config.check_workdir(str(tmp_path), other)
  assert "config.bootstrap: 8 in the workdir, 9 now" in str(e.value)
  assert "config.zoo.steps: 20 in the workdir, 21 now" in str(e.value)
  old = {k: v for k, v in rec.items() if k != "format"}
  (tmp_path / "config.json").write_text(json.dumps(old))
  with pytest.raises(config.ConfigError, match=f"delete {tmp_path}"):
    config.check_workdir(str(tmp_path), rec)
  (tmp_path / "config.json").write_text('{"format": 2, "models"')
  with pytest.raises(ValueError, match="config.json: the workdir's config is not valid JSON"):
    config.check_workdir(str(tmp_path), rec)


def _binary(module, *args):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_refused_run_leaves_no_config_and_the_corrected_one_runs(tmp_path):
  """A bad --models is refused before config.json is written; the corrected command
  then runs in the same workdir."""
  wd = tmp_path / "run"
  cfg_path = tmp_path / "micro.json"
  cfg_path.write_text(json.dumps({"config": config.to_dict(MICRO)}))
  out = _binary("scaling", f"--workdir={wd}", f"--config={cfg_path}", "--noprogress",
                "--models=no_such_model_dir,other_dir")
  assert out.returncode == 1 and "no_such_model_dir" in out.stderr
  assert "Traceback" not in out.stderr                    # one line, naming the path
  assert not (wd / "config.json").exists()
  out = _binary("scaling", f"--workdir={wd}", f"--config={cfg_path}", "--noprogress")
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads((wd / "config.json").read_text())["config"] == config.record_dict(MICRO)
  res = json.loads((wd / "results.json").read_text())
  # The run's explorer: one row per Rosetta pair of every model pair, and one per
  # pair of the first null permutation.
  rows = json.loads((wd / "explorer" / "inputs" / "rows.json").read_text())["rows"]
  kinds = [r["kind"] for r in rows]
  assert kinds.count("rosetta") == sum(res["counts"]) > 0
  from rosetta_jax import pairs  # pylint: disable=g-import-not-at-top
  saved = [pairs.PairResult.load(str(f)) for f in (wd / "pairs").glob("*.npz")]
  assert len(saved) == len(res["pairs"])
  assert kinds.count("null") == sum(len(x.null_idx_a) for x in saved) > 0
  assert (wd / "explorer" / "index.html").stat().st_size > 1000
  # A second process in the same workdir is refused while one holds it.
  context.lock_workdir(str(wd))
  out = _binary("scaling", f"--workdir={wd}", f"--config={cfg_path}", "--noprogress")
  assert out.returncode == 1 and "in use by another rosetta_jax process" in out.stderr


def test_record_binary_validates_before_writing(tmp_path):
  out = _binary("record", f"--workdir={tmp_path / 'rec'}", "--model=whatever", "--max_docs=-1")
  assert out.returncode != 0 and "--max_docs: must be an integer >= 0" in out.stderr
  assert not (tmp_path / "rec").exists()



def test_refused_record_rerun_leaves_the_workdir_as_it_was(tmp_path):
  """A re-run with another setting (--batch_size=4 where the workdir's store was
  recorded with 8) is refused naming the field with both values, and leaves every
  file of the workdir as it was (config.json still describes its store)."""
  wd = tmp_path / "rec"
  rec = config.workdir_record("record", "/some/model", config.RecordConfig(model="/some/model"))
  config.write_workdir_config(str(wd), rec)
  (wd / "store").mkdir()
  (wd / "store" / "manifest.json").write_text('{"format": "rosetta_jax.store/2"}')
  before = {p: p.read_bytes() for p in sorted(wd.rglob("*")) if p.is_file()}
  out = _binary("record", f"--workdir={wd}", "--model=/some/model", "--batch_size=4",
                "--max_chars=5")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert "config.batch_size: 8 in the workdir, 4 now" in out.stderr
  assert "config.max_chars: 0 in the workdir, 5 now" in out.stderr
  assert {p: p.read_bytes() for p in sorted(wd.rglob("*")) if p.is_file()} == before

def _listed(module):
  out = _binary(module, "--helpshort").stdout
  return {line.split(":")[0].strip().replace("[no]", "") for line in out.splitlines()
          if line.startswith("  --")}


def test_helpshort_lists_the_shared_and_derived_flags():
  listed = _listed("polarization")
  for flag in ("--workdir", "--preset", "--config", "--models", "--bootstrap", "--k",
               "--zoo_steps", "--verbose", "--progress"):
    assert flag in listed, flag
  listed = _listed("theory_sweep")
  for flag in ("--workdir", "--preset", "--num_features", "--budgets", "--alpha"):
    assert flag in listed, flag


def test_damaged_checkpoint_is_refused_before_any_write(tmp_path):
  bad = tmp_path / "broken_model"
  bad.mkdir()
  (bad / "config.json").write_text('{"model_type": "gpt_neox", ')
  wd = tmp_path / "run"
  with pytest.raises(ValueError, match="broken_model"):
    context.load_context(MICRO, str(wd), f"{bad},{bad}_other", progress=False)
  assert not (wd / "config.json").exists()
