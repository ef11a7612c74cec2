"""Stores refuse damage (rosetta_jax/store.py, checksums.py) and files are written
atomically (rosetta_jax/io.py)."""

import json
import os

import ml_dtypes
import numpy as np
import pytest

from rosetta_jax import checksums as C
from rosetta_jax import io as rio
from rosetta_jax import store as S
from test_store import DOCS, header, write_batches

SITES = (("a/mlp", 6), ("b/mlp", 4100))    # b: two neuron chunks per chunk row


@pytest.fixture
def store(tmp_path):
  """A complete store of 100 units: a/mlp [100, 6] (one chunk row of 100 units),
  b/mlp [100, 4100] (rows of 64 units, two chunk files each)."""
  rng = np.random.default_rng(0)
  data = {"a/mlp": rng.normal(size=(100, 6)).astype(np.float32),
          "b/mlp": rng.normal(2, 3, size=(100, 4100)).astype(np.float32)}
  w = S.StoreWriter(str(tmp_path), header(neurons=SITES), DOCS)
  write_batches(w, data, [(0, 30), (30, 31), (31, 77), (77, 100)])
  return str(tmp_path), data


def site_dir(path, site):
  return os.path.join(path, "sites", *site.split("/"))


def test_layout_and_checksums_of_written_data(store):
  path, data = store
  st = S.open_store(path)
  assert st.layout("a/mlp") == (100, 6) and st.layout("b/mlp") == (64, 4096)
  # Committed CRCs are those of the values, row by row, whatever the batch edges.
  for s, x in data.items():
    np.testing.assert_array_equal(st.checksums(s), C.row_crcs(x, st.layout(s)[0]))
  assert len(st.checksums("b/mlp")) == 2       # rows [0, 64) and [64, 100)
  rep = st.verify()
  assert (rep.sites, rep.chunk_rows, rep.chunk_files) == (2, 3, 1 + 2 * 2)
  assert rep.bytes == sum(x.nbytes for x in data.values())
  man = json.loads(open(os.path.join(path, "manifest.json")).read())
  assert man["format"] == S.FORMAT and man["checksum"] == C.ALGORITHM
  meta = json.loads(open(os.path.join(site_dir(path, "b/mlp"), ".zarray")).read())
  assert meta["fill_value"] == "NaN"


def test_missing_chunk_is_an_error_naming_store_site_chunk(store):
  path, data = store
  os.remove(os.path.join(site_dir(path, "b/mlp"), "0.1"))     # units [0, 64), neurons 4096+
  src = S.open_store(path).site("b/mlp")
  np.testing.assert_array_equal(src.read(64, 100), data["b/mlp"][64:])   # row 1 is intact
  with pytest.raises(S.StoreDamagedError) as e:
    src.read(40, 50)
  msg = str(e.value)
  assert path in msg and "site 'b/mlp'" in msg and "chunk row 0 (units [0, 64))" in msg
  assert "chunk file sites/b/mlp/0.1 is missing" in msg and "delete the store" in msg
  with pytest.raises(S.StoreDamagedError, match="chunk row 0 .*0.1 is missing"):
    S.open_store(path).verify()
  with pytest.raises(S.StoreDamagedError, match="chunk row 0 .*0.1 is missing"):
    S.open_store(path, verify=True)


def test_truncated_chunk_is_an_error(store):
  path, _ = store
  with open(os.path.join(site_dir(path, "b/mlp"), "1.0"), "r+b") as f:
    f.truncate(1000)
  with pytest.raises(S.StoreDamagedError,
                     match=r"chunk row 1 \(units \[64, 100\)\).*1.0 holds 1000 bytes, not "
                           r"1048576 \(truncated"):
    S.open_store(path).site("b/mlp").read(0, 100)
  with pytest.raises(S.StoreDamagedError, match="chunk row 1"):
    S.open_store(path).verify()


def test_flipped_bytes_fail_the_checksum(store):
  path, data = store
  f = os.path.join(site_dir(path, "a/mlp"), "0.0")
  raw = bytearray(open(f, "rb").read())
  raw[4 * 6 * 57 + 8] ^= 0x01                          # one bit of unit 57, neuron 2
  open(f, "wb").write(bytes(raw))
  with pytest.raises(S.StoreDamagedError,
                     match=r"site 'a/mlp': chunk row 0 \(units \[0, 100\)\) is damaged: its "
                           "contents differ from the checksum"):
    S.open_store(path).site("a/mlp").read(0, 10)   # any read of the row checks it
  with pytest.raises(S.StoreDamagedError, match="site 'a/mlp': chunk row 0"):
    S.open_store(path).verify()
  # The other site is unharmed and still reads.
  np.testing.assert_array_equal(S.open_store(path).site("b/mlp").read(0, 100), data["b/mlp"])


def test_verify_checks_moments_documents_and_state(store, tmp_path):
  path, _ = store
  S.open_store(path).verify()
  # Moments that do not describe the data (a consistent but wrong state file).
  st = S.open_store(path)
  mom = dict(st.moments())
  m = mom["a/mlp"]
  mom["a/mlp"] = S.Moments(m.count, m.mean + 1e-3, m.m2, m.min, m.max)
  crcs = {s: st.checksums(s) for s in st.sites}
  name = st.manifest["state_file"]
  import hashlib, io
  buf = io.BytesIO()
  np.savez(buf, **S._state_arrays(mom, crcs))
  rio.atomic_write_bytes(os.path.join(path, name), buf.getvalue())
  with pytest.raises(S.StoreDamagedError, match="state file .* does not match the SHA-256"):
    S.open_store(path).moments()
  man = dict(st.manifest, state_sha256=hashlib.sha256(buf.getvalue()).hexdigest())
  rio.atomic_write_json(os.path.join(path, "manifest.json"), man)
  with pytest.raises(S.StoreDamagedError, match="stored mean of 6 neurons .* differs"):
    S.open_store(path).verify()
  # A damaged documents.json.
  docs = os.path.join(path, "documents.json")
  body = open(docs).read()
  open(docs, "w").write(body.replace('"x"', '"q"'))
  with pytest.raises(S.StoreDamagedError, match="documents.json does not match"):
    _ = S.open_store(path).documents
  open(docs, "w").write(body[:20])
  with pytest.raises(S.StoreDamagedError, match="documents.json: the store's document list is "
                                                 "not valid JSON"):
    _ = S.open_store(path).documents


def test_truncated_manifest_and_old_format(store):
  path, _ = store
  mpath = os.path.join(path, "manifest.json")
  body = open(mpath).read()
  open(mpath, "w").write(body[:50])
  with pytest.raises(S.StoreDamagedError, match="manifest.json: the store manifest is not "
                                                 "valid JSON .*delete the store"):
    S.open_store(path)
  open(mpath, "w").write(body.replace(S.FORMAT, "rosetta_jax.store/1"))
  with pytest.raises(ValueError, match="predates chunk checksums.*delete the store"):
    S.open_store(path)


def test_partial_last_row_resumes_and_is_checked(tmp_path):
  """An unfinished store's open chunk row has a checksum too; resuming checks it
  first, then continues its CRC: the result equals an uninterrupted store."""
  x = np.random.default_rng(1).normal(size=(100, 6)).astype(ml_dtypes.bfloat16)
  hdr = header(neurons=(("a/mlp", 6),), dtype="bfloat16")
  w = S.StoreWriter(str(tmp_path / "s"), hdr, DOCS)
  write_batches(w, {"a/mlp": x}, [(0, 45), (45, 70)], commit_upto=45)  # 70 uncommitted
  assert S.open_store(str(tmp_path / "s")).site("a/mlp").read(0, 45).shape == (45, 6)
  w = S.StoreWriter(str(tmp_path / "s"), hdr, DOCS)
  assert w.units_done == 45
  write_batches(w, {"a/mlp": x}, [(45, 80), (80, 100)])
  ref = S.StoreWriter(str(tmp_path / "r"), hdr, DOCS)
  write_batches(ref, {"a/mlp": x}, [(0, 100)])
  a, b = S.open_store(str(tmp_path / "s")), S.open_store(str(tmp_path / "r"))
  np.testing.assert_array_equal(a.checksums("a/mlp"), b.checksums("a/mlp"))
  a.verify()
  # Damage inside the committed part of an open row stops the resume.
  w = S.StoreWriter(str(tmp_path / "t"), hdr, DOCS)
  write_batches(w, {"a/mlp": x}, [(0, 45)])
  os.remove(os.path.join(site_dir(str(tmp_path / "t"), "a/mlp"), "0.0"))
  with pytest.raises(S.StoreDamagedError, match="chunk row 0 .*0.0 is missing"):
    S.StoreWriter(str(tmp_path / "t"), hdr, DOCS)


def test_writes_must_follow_in_order(tmp_path):
  w = S.StoreWriter(str(tmp_path), header(), DOCS)
  w.write("a/mlp", 0, np.zeros((10, 6), np.float32)).result()
  with pytest.raises(ValueError, match="expected a write at unit 10, got 20"):
    w.write("a/mlp", 20, np.zeros((10, 6), np.float32))
  with pytest.raises(ValueError, match="site 'b/mlp' holds 0 written units, cannot commit 10"):
    w.commit(10, w.moments)
  with pytest.raises(ValueError, match="documents_hash"):
    S.StoreWriter(str(tmp_path / "x"), header(), {**DOCS, "unit_offsets": [0, 41, 100]})


def test_atomic_writes_leave_old_file_on_failure(tmp_path):
  p = str(tmp_path / "sub" / "a.json")
  rio.atomic_write_json(p, {"x": 1})
  assert rio.read_json(p) == {"x": 1}
  with pytest.raises(TypeError):
    rio.atomic_write_json(p, {"x": object()})
  with pytest.raises(RuntimeError):
    with rio.atomic_open(p, "w") as f:
      f.write('{"x": 2')
      raise RuntimeError("killed mid-write")
  assert rio.read_json(p) == {"x": 1} and os.listdir(tmp_path / "sub") == ["a.json"]
  rio.atomic_write_npz(str(tmp_path / "z.npz"), a=np.arange(3))
  with np.load(tmp_path / "z.npz") as z:
    np.testing.assert_array_equal(z["a"], np.arange(3))
  rio.atomic_write_text(p, '{"x": ')
  with pytest.raises(ValueError, match=r"a.json: not valid JSON .*cut short"):
    rio.read_json(p)


def test_tokenizer_is_saved_atomically_and_damage_is_named(tmp_path):
  from rosetta_jax.data.tokenizer import Tokenizer, train_bpe
  tok = train_bpe(["hello world", "hello there"], vocab_size=280)
  tok.save(str(tmp_path))
  assert os.listdir(tmp_path) == ["tokenizer.json"]
  back = Tokenizer.load(str(tmp_path))
  np.testing.assert_array_equal(back.encode("hello world").ids, tok.encode("hello world").ids)
  p = tmp_path / "tokenizer.json"
  p.write_text(p.read_text()[:100])
  with pytest.raises(ValueError, match=r"tokenizer.json is not a readable tokenizer .*EOF.*"
                                       r"cut short"):
    Tokenizer.load(str(tmp_path))


def test_check_files_names_missing_and_cut_chunks_without_reading(store, monkeypatch):
  path, _ = store
  S.open_store(path).check_files()
  monkeypatch.setattr(S.Store, "_array", lambda *a: pytest.fail("check_files read data"))
  f = os.path.join(site_dir(path, "b/mlp"), "1.1")
  raw = open(f, "rb").read()
  os.remove(f)
  with pytest.raises(S.StoreDamagedError, match=r"site 'b/mlp': chunk row 1 \(units \[64, "
                                                r"100\)\) is damaged: chunk file "
                                                r"sites/b/mlp/1.1 is missing; delete"):
    S.open_store(path).check_files()
  open(f, "wb").write(raw[:-4])
  with pytest.raises(S.StoreDamagedError, match=r"chunk row 1 .*1.1 holds \d+ bytes, not "):
    S.open_store(path).check_files()


def _run_binary(module, *args):
  import subprocess
  import sys
  env = dict(os.environ, ROSETTA_JAX_VERBOSE="")
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                        text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_verify_flag_checks_every_store_before_work(store, tmp_path_factory):
  """``--verify`` on a binary verifies each store under the workdir (found by
  ``find_stores``, which skips files that are not stores) after the flags and
  before any work or write; a damaged store ends the run with one line naming
  store, site and chunk."""
  import shutil
  path, _ = store
  work = tmp_path_factory.mktemp("work")
  shutil.copytree(path, work / "acts" / "m1")
  shutil.copytree(path, work / "store")
  (work / "zoo").mkdir()
  (work / "zoo" / "manifest.json").write_text('{"not": "a store"}')
  assert S.find_stores(str(work)) == [str(work / "acts" / "m1"), str(work / "store")]
  reps = S.verify_stores(str(work))
  assert [r.chunk_rows for r in reps] == [3, 3]
  os.remove(os.path.join(site_dir(str(work / "acts" / "m1"), "a/mlp"), "0.0"))
  for module, extra in (("experiments.record", "--model=/nonexistent"),
                        ("experiments.scaling", "--models=/nonexistent,/other")):
    out = _run_binary(module, f"--workdir={work}", extra, "--verify", "--noprogress")
    assert out.returncode == 1, out.stderr[-2000:]
    err = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert (f"store {work / 'acts' / 'm1'} is damaged: site 'a/mlp': chunk row 0 (units "
            "[0, 100)): chunk file sites/a/mlp/0.0 is missing" in err[0]), err[0]
    assert not (work / "config.json").exists()          # refused before any write


def test_reports_and_neuron_stats_are_written_atomically(tmp_path, monkeypatch):
  """A write killed before its rename leaves the previous file whole (the rename
  is made to fail here) and no temporary behind."""
  from rosetta_jax.analysis.selectivity import NeuronStats
  from rosetta_jax.report.html import Report
  rep, npz = str(tmp_path / "report.html"), str(tmp_path / "stats.npz")
  Report("first").text("one").write(rep)
  fields = [f.name for f in __import__("dataclasses").fields(NeuronStats) if f.name != "labels"]
  st = NeuronStats(**{f: np.arange(3.0) for f in fields}, labels=None)
  st.save(npz)
  old = {p: open(p, "rb").read() for p in (rep, npz)}

  def killed(*_):
    raise OSError("killed before the rename")
  monkeypatch.setattr(rio.os, "replace", killed)
  with pytest.raises(OSError, match="killed"):
    Report("second").text("two").write(rep)
  with pytest.raises(OSError, match="killed"):
    NeuronStats(**{f: np.zeros(3) for f in fields}, labels=None).save(npz)
  assert {p: open(p, "rb").read() for p in (rep, npz)} == old
  assert sorted(os.listdir(tmp_path)) == ["report.html", "stats.npz"]
  monkeypatch.undo()
  Report("second").text("two").write(rep)
  assert "second" in open(rep).read()


def test_no_writer_writes_its_target_in_place():
  """Every file write in the package goes to a temporary name first (rosetta_jax.io,
  or a ``tmp``/buffer then ``os.replace``): a source audit that fails on a new
  in-place ``open(path, "w")``, ``np.savez(path)``, ``write_text`` or ``json.dump``."""
  import re
  root = os.path.join(os.path.dirname(os.path.dirname(__file__)))
  pat = re.compile(r"open\([^)]*['\"][wa][bt]?['\"]|np\.savez(_compressed)?\(|np\.save\(|"
                   r"write_text\(|write_bytes\(|json\.dump\(|\.to_csv\(|savefig\(|"
                   r"pq\.write_table\(")
  bad = []
  for top in ("rosetta_jax", "experiments", "theory"):
    for d, _, files in os.walk(os.path.join(root, top)):
      for f in files:
        if not f.endswith(".py") or f == "io.py" and d.endswith("rosetta_jax"):
          continue
        path = os.path.join(d, f)
        lines = open(path, encoding="utf-8").read().splitlines()
        for i, line in enumerate(lines):
          if not pat.search(line) or line.lstrip().startswith("#"):
            continue
          prev = lines[i - 1] if i else ""
          if (re.search(r"\btmp\b|\bbuf\b|atomic|\.tmp", line)
              or re.search(r"open\((tmp|path \+ \"\.tmp\")|atomic_open", prev)):  # (x, f)
            continue
          bad.append(f"{os.path.relpath(path, root)}:{i + 1}: {line.strip()}")
  assert not bad, "in-place writes:\n" + "\n".join(bad)
