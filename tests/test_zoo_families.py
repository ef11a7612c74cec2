"""The zoo's second architecture: a Llama-style family with its own tokenizer.

A zoo of two families gives, at every width, pairs across seeds within each family
and pairs across families; the cross-family pairs are matched on byte-span units
(the two tokenizers cut the text differently), through the same pipeline.
"""
import dataclasses

import jax
import numpy as np
import pytest

from rosetta_jax import pairs
from rosetta_jax.match import rosetta
from rosetta_jax.models import llama
from rosetta_jax.studies import config, context, registry
from rosetta_jax.zoo import config as zoo_config

CFG = zoo_config.ZooConfig(widths=(16,), num_layers=1, seeds=(0, 1), vocab_size=300,
                           llama_vocab_size=260, seq_len=16, batch_size=4, steps=8, lr=1e-2,
                           warmup=2, ckpt_every=4, families=("gpt_neox", "llama"))


def test_family_validation_names_the_field():
  with pytest.raises(ValueError, match="families: unknown family 'mamba'"):
    dataclasses.replace(CFG, families=("gpt_neox", "mamba"))
  with pytest.raises(ValueError, match="families: give distinct"):
    dataclasses.replace(CFG, families=("llama", "llama"))
  mcfg = CFG.model_config(16, "llama")
  assert isinstance(mcfg, llama.LlamaConfig) and mcfg.intermediate_size == 64
  assert mcfg.vocab_size == 260 and CFG.model_config(16).vocab_size == 300


MICRO = config.StudyConfig(zoo=CFG, record_docs=12, record_chars=120, record_len=16,
                           bootstrap=10, candidates=2, null_permutations=2, budgets=(),
                           untrained=False, identity_null=False)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
  return context.load_context(MICRO, str(tmp_path_factory.mktemp("fam")), "zoo",
                              progress=False)


def test_pairs_across_seeds_and_architectures(ctx):
  labels = [p.label for p in ctx.pairs]
  assert labels == ["w16-s0s1", "w16-llama-s0s1", "w16-gpt_neox-llama-s0",
                    "w16-gpt_neox-llama-s1"]
  kinds = [context.pair_kind(p.a.name, p.b.name) for p in ctx.pairs]
  assert kinds == ["seeds", "seeds", "architectures", "architectures"]
  cross = ctx.pairs[2]
  assert cross.a.name == "zoo-w16-s0" and cross.b.name == "zoo-llama-w16-s0"
  assert cross.a.num_neurons == cross.b.num_neurons == 64
  # SwiGLU (gate and up projections): a Llama module, not GPT-NeoX under another name.
  assert "gate_proj" in str(jax.tree_util.tree_structure(cross.b.params))
  # Two tokenizers that cut the text differently: the units are the byte spans
  # between boundaries common to both, no more than the coarser one's tokens and
  # fewer than the finer one's.
  text = ctx.docs[0].text
  tok_a, tok_b = cross.a.tokenizer, cross.b.tokenizer
  ids_a, ids_b = tok_a.encode_ids([text])[0], tok_b.encode_ids([text])[0]
  assert tok_a.vocab_size != tok_b.vocab_size and len(ids_a) != len(ids_b)
  # The Llama family's BPE splits every digit (GPT-NeoX's merges digit runs).
  digits = tok_b.encode(" 2048 12345")
  pieces = [b" 2048 12345"[s:e].strip() for s, e in digits.offsets]
  assert [p for p in pieces if p] == [b"2", b"0", b"4", b"8", b"1", b"2", b"3", b"4", b"5"]
  # ... by its pre-tokenizer, whatever merges a micro corpus taught it.
  pre = lambda t: [w for w, _ in t.backend.pre_tokenizer.pre_tokenize_str("x 2048")]
  assert pre(tok_a) == ["x", "Ġ2048"] and pre(tok_b) == ["x", "Ġ", "2", "0", "4", "8"]
  units = ctx.stores[cross.a.name].documents["unit_offsets"]
  assert units[1] - units[0] <= min(len(ids_a), len(ids_b))
  assert units[1] - units[0] < max(len(ids_a), len(ids_b))
  for p in ctx.pairs:
    np.testing.assert_array_equal(ctx.stores[p.a.name].documents["unit_offsets"],
                                  ctx.stores[p.b.name].documents["unit_offsets"])


def test_cross_architecture_pair_is_the_plain_match(ctx):
  cross = ctx.pairs[2]
  res = ctx.result(cross)
  sa, sb = ctx.stores[cross.a.name], ctx.stores[cross.b.name]
  raw, *_ = rosetta.match_sites({s: sa.site(s) for s in cross.a.mlp_sites()},
                                {s: sb.site(s) for s in cross.b.mlp_sites()}, k=1)
  ia, jb, r = rosetta.mutual_pairs(raw, k=1, r_min=res.r_threshold)
  np.testing.assert_array_equal(res.idx_a, ia)
  np.testing.assert_array_equal(res.idx_b, jb)
  np.testing.assert_allclose(res.r, r, atol=1e-6)


def test_scaling_reports_each_kind(ctx):
  res = registry.run_study("scaling", ctx).to_json()
  assert sorted(res["by_kind"]) == ["architectures", "seeds"]
  counts = {p["label"]: p["count"] for p in res["pairs"]}
  assert res["by_kind"]["seeds"]["counts"] == [
      pytest.approx((counts["w16-s0s1"] + counts["w16-llama-s0s1"]) / 2)]
  assert res["by_kind"]["architectures"]["counts"] == [pytest.approx(
      (counts["w16-gpt_neox-llama-s0"] + counts["w16-gpt_neox-llama-s1"]) / 2)]
  assert res["headline"]["counts"] == [pytest.approx(np.mean(list(counts.values())))]


def test_in_memory_pair_equals_the_streamed_one(ctx, tmp_path, monkeypatch):
  """A pair read into memory once (the default for pairs that fit) gives the same
  PairResult as one streamed from the stores chunk by chunk."""
  from rosetta_jax.match import sources  # pylint: disable=g-import-not-at-top
  cross = ctx.pairs[2]
  site = ctx.stores[cross.b.name].site(cross.b.mlp_sites()[0])
  host = sources.HostSource(site)
  np.testing.assert_array_equal(host.read(3, 40), site.read(3, 40))
  order = np.random.default_rng(0).permutation(site.num_units)
  np.testing.assert_array_equal(sources.PermutedSource(host, order).read(5, 60),
                                sources.PermutedSource(site, order).read(5, 60))
  assert host.moments() is not None
  np.testing.assert_array_equal(host.moments().mean, site.moments().mean)

  def fresh(workdir):                 # with the unit-identity null (a memory-side gather)
    return context.Context(dataclasses.replace(ctx.cfg, identity_null=True), str(workdir),
                           "zoo", ctx.pairs, ctx.stores, ctx.docs, ctx.weights, {},
                           progress=False)
  mem = pairs.match_pair(fresh(tmp_path / "mem"), cross)
  monkeypatch.setattr(pairs, "IN_MEMORY_BYTES", 0)
  streamed = pairs.match_pair(fresh(tmp_path / "stream"), cross)
  for f in ("idx_a", "idx_b", "raw_r", "null_r", "null_perm", "boot_counts", "members_a"):
    np.testing.assert_array_equal(getattr(mem, f), getattr(streamed, f), err_msg=f)
  np.testing.assert_array_equal(mem.r, streamed.r)
  assert mem.identity == streamed.identity and mem.identity["raw_count"] > 0


def test_pair_matched_over_a_device_mesh_equals_one_device(ctx, tmp_path):
  """``--mesh``: a study's pair matched over 4 x 2 (fake) devices, units on ``data``
  and neurons on ``model``, gives the one-device pairs with r within 1e-6."""
  from rosetta_jax import sharding  # pylint: disable=g-import-not-at-top
  if len(jax.devices()) < 8:
    raise AssertionError("tests/conftest.py sets 8 host devices; got "
                         f"{len(jax.devices())}")
  mesh = sharding.mesh_from_flag("data:4,model:2")
  cross = ctx.pairs[2]
  one = ctx.result(cross)
  sharded = pairs.match_pair(context.Context(
      ctx.cfg, str(tmp_path), "zoo", ctx.pairs, ctx.stores, ctx.docs, ctx.weights, {},
      progress=False, mesh=mesh), cross)
  np.testing.assert_array_equal(sharded.idx_a, one.idx_a)
  np.testing.assert_array_equal(sharded.idx_b, one.idx_b)
  np.testing.assert_allclose(sharded.r, one.r, atol=1e-6)
  np.testing.assert_allclose(np.sort(sharded.null_r), np.sort(one.null_r), atol=1e-6)
  np.testing.assert_array_equal(sharded.boot_counts, one.boot_counts)


def test_study_binaries_refuse_several_processes(monkeypatch):
  """A study binary joined to several processes is refused before any work, with
  the flag named and the way to run it (record across processes, study in one)."""
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from experiments import common_flags as cf  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(config.ConfigError, match=r"num_processes: .*experiments.record"):
    cf.study_mesh()


def test_single_family_records_match_zoos_written_before_families(tmp_path):
  """A GPT-NeoX-only zoo records no family fields (workdirs and zoo directories
  written before the second architecture still resume); a two-family zoo does."""
  one = config.workdir_record("pipeline", "zoo", config.get_preset("tiny"))["config"]["zoo"]
  assert "families" not in one and "llama_vocab_size" not in one
  two = config.workdir_record("pipeline", "zoo", config.get_preset("default"))["config"]["zoo"]
  assert list(two["families"]) == ["gpt_neox", "llama"] and two["llama_vocab_size"] == 1536
  assert zoo_config.record(dataclasses.replace(CFG, families=("gpt_neox",))) == {
      k: v for k, v in zoo_config.to_dict(CFG).items() if k not in ("families",
                                                                    "llama_vocab_size")}
