"""End-to-end smoke test of the vision scaling study (--modality=vision) on a micro
vision zoo: its pairs against a direct match of the stores, the null moving whole
images, the bootstrap resampling images, a resumed run, and the config's errors."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rosetta_jax as rj
from rosetta_jax import pairs
from rosetta_jax.match import rosetta
from rosetta_jax.studies import config, context, registry
from rosetta_jax.zoo import generator as gen_lib
from rosetta_jax.zoo import vision as Z

# Two widths x three seeds (three seed pairs per width), one-layer models, a
# one-layer generator and 40 generated images on the 4 x 4 grid (640 units).
MICRO = dataclasses.replace(
    config.VISION_PRESETS["tiny"],
    vision_zoo=Z.VisionZooConfig(
        widths=(8, 16), seeds=(0, 1, 2), num_layers=1, patch_size=7,
        schedule=Z.Schedule(steps=24, batch_size=32, lr=3e-3, warmup=4, ckpt_every=24),
        generator=Z.GeneratorConfig(
            hidden_size=16, num_layers=1, num_heads=2, num_samples=40,
            schedule=Z.Schedule(steps=12, batch_size=16, lr=2e-3, warmup=2,
                                weight_decay=0.0, ckpt_every=12))),
    record_batch=16, bootstrap=20, candidates=4, null_permutations=2, budgets=(0.5,))
CELLS = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_study(cfg, workdir):
  ctx = context.load_context(cfg, workdir, "zoo", progress=False)
  return ctx, registry.run_study("scaling", ctx).to_json()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vision_study"))
  ctx, res = run_study(MICRO, workdir)
  return workdir, ctx, res


def _acts(store, sites):
  return np.concatenate([np.asarray(store.site(s).read(0, store.total_units)) for s in sites],
                        axis=1)


def test_outputs_pairs_and_generator(run):
  workdir, ctx, res = run
  for name in ("config.json", "results.json", "report.html"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "config.json")) as f:
    rec = json.load(f)["config"]
  assert rec["modality"] == "vision" and "zoo" not in rec   # the text zoo is not its identity
  assert res["modality"] == "vision"
  assert [p["label"] for p in res["pairs"]] == [f"w{w}-s{a}s{b}" for w in (8, 16)
                                                for a, b in ((0, 1), (0, 2), (1, 2))]
  assert res["sizes"] == [32.0] * 3 + [64.0] * 3           # 1 layer x 4 * width
  gen = res["generator"]
  assert gen["model"] == "dit-generator" and gen["neurons"] == 64
  assert [p["label"] for p in gen["pairs"]] == [f"gen~vit-w{w}-s{s}" for w in (8, 16)
                                                for s in range(3)]
  assert gen["discriminator_neurons"] == [32] * 3 + [64] * 3
  assert gen["fit"]["sizes"] == [32.0, 64.0]
  assert gen["fit"]["counts"] == pytest.approx([np.mean(gen["counts"][:3]),
                                                np.mean(gen["counts"][3:])])
  for p in res["pairs"] + gen["pairs"]:
    assert p["units"] == 40 * CELLS and p["documents"] == 40 and p["identity"] is None
    assert p["count"] <= p["raw_count"] and p["null_count"] >= 0
  # The generator's anchors: neurons in a Rosetta pair with all six discriminators.
  ga = gen["anchor_set"]
  assert ga["partners"] == 6
  masks = [pairs.PairResult.load(os.path.join(workdir, "pairs", p["cache"] + ".npz")).mask_a
           for p in gen["pairs"]]
  assert ga["count"] == int(np.logical_and.reduce(masks).sum())
  assert res["untrained"] is None and res["identity_null"] is None
  html = open(os.path.join(workdir, "report.html")).read()
  assert "Generator vs discriminators" in html and "generated images x grid cells" in html


@pytest.mark.parametrize("which", ["seeds", "generator"])
def test_pairs_table_is_a_direct_match_of_the_stores(run, which):
  """The saved pairs table: mutual nearest neighbours of a direct ``rj.match`` of the
  two stores' concatenated sites, above the pair's r floor."""
  workdir, ctx, res = run
  p = (res["pairs"][4] if which == "seeds" else res["generator"]["pairs"][4])
  r = pairs.PairResult.load(os.path.join(workdir, "pairs", p["cache"] + ".npz"))
  a = _acts(ctx.stores[r.model_a], r.sites_a)
  b = _acts(ctx.stores[r.model_b], r.sites_b)
  assert r.excluded_a == r.excluded_b == 0      # no constant neuron: indices line up
  direct = rj.match(a, b, k=1)
  ia, jb, rr = rj.mutual_pairs(direct, k=1, r_min=r.r_threshold)
  order = np.argsort(ia)
  rows = open(os.path.join(workdir, "pairs", p["cache"] + ".tsv")).read().splitlines()[1:]
  table = sorted((int(r.offsets_a[r.sites_a.index(sa)]) + int(na),
                  int(r.offsets_b[r.sites_b.index(sb)]) + int(nb), float(x))
                 for sa, na, sb, nb, x in (line.split("\t") for line in rows))
  assert len(table) == len(ia) == r.count > 0
  assert [t[0] for t in table] == ia[order].tolist()
  assert [t[1] for t in table] == jb[order].tolist()
  np.testing.assert_allclose([t[2] for t in table], rr[order], atol=1e-5)


def test_the_null_permutes_whole_images_and_the_bootstrap_resamples_images(run):
  workdir, ctx, res = run
  store = ctx.stores["vit-w16-s1"]
  doc = pairs.doc_index(store)
  np.testing.assert_array_equal(doc, np.repeat(np.arange(40), CELLS))
  order = rosetta.document_permutation(len(doc), pairs.null_seeds(MICRO.seed, 2)[0], doc)
  blocks = order.reshape(40, CELLS)
  perm = blocks[:, 0] // CELLS
  # Every image's cells go, in their grid order, to another image's cells.
  np.testing.assert_array_equal(blocks, perm[:, None] * CELLS + np.arange(CELLS))
  assert sorted(perm.tolist()) == list(range(40)) and np.all(perm != np.arange(40))
  # The pair's first null permutation is the plain match of A against B with B's
  # images reordered by hand.
  p = res["pairs"][4]
  r = pairs.PairResult.load(os.path.join(workdir, "pairs", p["cache"] + ".npz"))
  a = _acts(ctx.stores[r.model_a], r.sites_a)
  b = _acts(ctx.stores[r.model_b], r.sites_b).reshape(40, CELLS, -1)[perm].reshape(40 * CELLS,
                                                                                  -1)
  _, _, null_r = rj.mutual_pairs(rj.match(a, b, k=1), k=1)
  np.testing.assert_allclose(np.sort(r.null_r[r.null_perm == 0]), np.sort(null_r), atol=1e-5)
  # The bootstrap draws images: one multiplicity per image, 40 per resample.
  assert ctx.weights.shape == (MICRO.bootstrap, 40)
  np.testing.assert_array_equal(ctx.weights.sum(1), 40)
  assert len(ctx.docs) == 40 and ctx.docs[3].domain == ctx.stores["vit-w8-s0"].documents[
      "domains"][3]
  assert ctx.labels.doc_index.tolist() == doc.tolist()


def test_resumed_run_matches_on_the_same_images(run, tmp_path):
  workdir, ctx, res = run
  samples = os.path.join(workdir, "zoo", "generator", gen_lib.SAMPLES)
  mtime = os.path.getmtime(samples)
  # A run whose stores, pairs and results are gone (recorded again from the stored
  # images and the trained zoo) gives the same results.
  copy = str(tmp_path / "resumed")
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(".lock"))
  for d in ("pairs", "acts"):
    shutil.rmtree(os.path.join(copy, d))
  os.remove(os.path.join(copy, "results.json"))
  _, again = run_study(MICRO, copy)
  drop = lambda ps: [{k: v for k, v in p.items() if k != "seconds"} for p in ps]
  assert drop(again["pairs"]) == drop(res["pairs"])
  assert drop(again["generator"]["pairs"]) == drop(res["generator"]["pairs"])
  assert again["counts"] == res["counts"]
  assert again["generator"]["counts"] == res["generator"]["counts"]
  assert again["generator"]["anchor_set"] == res["generator"]["anchor_set"]
  assert os.path.getmtime(samples) == mtime


def test_polarization_with_classes_as_domains(run):
  """The polarization study on images: documents are images, domains their classes."""
  _, ctx, res = run
  assert ctx.labels.domains == tuple(sorted(set(ctx.stores["vit-w8-s0"].documents["domains"])))
  m = ctx.pairs[0].a
  st = ctx.neuron_stats(m)
  x = _acts(ctx.stores[m.name], m.mlp_sites())
  np.testing.assert_array_equal(st.n, CELLS)                     # one document per image
  np.testing.assert_allclose(st.s1, (x - st.center).reshape(40, CELLS, -1).sum(1), atol=1e-4)
  pol = registry.run_study("polarization", ctx, write=False).to_json()
  assert [p["label"] for p in pol["per_size"]] == [p["label"] for p in res["pairs"]]
  for p, q in zip(pol["per_size"], res["pairs"]):
    assert p["rosetta"] == 2 * q["count"]       # both models' Rosetta neurons, pooled
  assert pol["documents"] == 40 and pol["units"] == 40 * CELLS
  with pytest.raises(config.ConfigError, match="modality: the domains study runs on "
                     "text only"):
    registry.run_study("domains", ctx)


def test_vision_config_errors():
  with pytest.raises(config.ConfigError, match="untrained: the untrained baseline"):
    dataclasses.replace(MICRO, untrained=True)
  with pytest.raises(config.ConfigError, match="identity_null: "):
    dataclasses.replace(MICRO, identity_null=True)
  with pytest.raises(config.ConfigError, match="record_docs: with --modality=vision"):
    dataclasses.replace(MICRO, record_docs=10)
  with pytest.raises(config.ConfigError, match=r"zoo: the text zoo's settings \(--zoo_\*\)"):
    dataclasses.replace(MICRO, zoo=dataclasses.replace(MICRO.zoo, steps=5))
  with pytest.raises(config.ConfigError, match="vision_zoo: the vision zoo's settings"):
    dataclasses.replace(config.PRESETS["tiny"], vision_zoo=MICRO.vision_zoo)
  with pytest.raises(config.ConfigError, match="modality: must be one of"):
    dataclasses.replace(MICRO, modality="audio")
  with pytest.raises(config.ConfigError, match="preset: unknown preset 'paper' for "
                     "--modality=vision"):
    config.get_preset("paper", modality="vision")
  assert config.get_preset("tiny", modality="vision").modality == "vision"
  assert config.get_preset("tiny").modality == "text"
  # A text run's workdir record is what it was before the vision fields existed.
  rec = config.workdir_record("pipeline", "zoo", config.PRESETS["tiny"])
  assert "modality" not in rec["config"] and "vision_zoo" not in rec["config"]
  assert config.from_dict(config.StudyConfig, rec["config"]) == config.PRESETS["tiny"]
  # A vision run's record (no text zoo) reads back as its config (--config=.../config.json).
  vrec = json.loads(json.dumps(config.workdir_record("pipeline", "zoo", MICRO)))
  assert config.from_dict(config.StudyConfig, vrec["config"]) == MICRO


def test_vision_refuses_model_lists(tmp_path):
  with pytest.raises(config.ConfigError, match="models: --modality=vision runs the vision "
                     "zoo only"):
    context.load_context(MICRO, str(tmp_path), "a,b", progress=False)
  assert not os.path.exists(tmp_path / "config.json")


def test_binary_picks_the_vision_presets(tmp_path):
  """--preset names a preset of --modality's family (the text family has 'paper', the
  vision family does not), refused naming the flag before any write."""
  out = subprocess.run([sys.executable, "-m", "experiments.scaling", "--modality=vision",
                        "--preset=paper", f"--workdir={tmp_path}"], capture_output=True,
                       text=True, cwd=ROOT)
  assert out.returncode != 0
  assert "--preset: unknown preset 'paper' for --modality=vision" in out.stderr
  assert not os.listdir(tmp_path)
