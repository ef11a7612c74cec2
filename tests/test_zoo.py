"""Zoo trainer: the loss falls, and an interrupted run resumes to identical weights."""
import dataclasses

import jax
import numpy as np
import pytest

from rosetta_jax.data import corpus, tokenizer
from rosetta_jax.zoo import config, train

CFG = config.ZooConfig(widths=(16,), num_layers=1, seeds=(0, 1), vocab_size=300, seq_len=16,
                       batch_size=4, steps=12, lr=1e-2, warmup=2, ckpt_every=4)


@pytest.fixture(scope="module")
def stream():
  docs = corpus.load_corpus("train")[:40]
  tok = tokenizer.train_bpe([d.text for d in docs], CFG.vocab_size)
  return train.token_stream(tok, docs)


def test_loss_decreases(tmp_path, stream):
  cfg = dataclasses.replace(CFG, steps=40, ckpt_every=40)
  _, losses = train.train_width(cfg, 16, stream, str(tmp_path / "w16"), progress=False)
  first, last = np.array(losses[0][1]), np.array(losses[-1][1])
  assert first.shape == (2,)
  assert np.all(last < first - 0.5), (first, last)


def test_seeds_differ(tmp_path, stream):
  params, _ = train.train_width(dataclasses.replace(CFG, steps=2, ckpt_every=2), 16, stream,
                                str(tmp_path / "w16"), progress=False)
  emb = params["embed_in"]["embedding"]
  assert emb.shape[0] == 2 and not np.allclose(emb[0], emb[1])


def test_resume_equals_uninterrupted(tmp_path, stream):
  full, _ = train.train_width(CFG, 16, stream, str(tmp_path / "a"), progress=False)
  # Interrupted after step 6 (last checkpoint at 4): re-running resumes from step 4.
  part, _ = train.train_width(CFG, 16, stream, str(tmp_path / "b"), stop_after=6, progress=False)
  assert not (tmp_path / "b" / "final").exists()
  resumed, _ = train.train_width(CFG, 16, stream, str(tmp_path / "b"), progress=False)
  leaves_full = jax.tree_util.tree_leaves(full)
  leaves_res = jax.tree_util.tree_leaves(resumed)
  for x, y in zip(leaves_full, leaves_res):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # And a finished width loads from its final checkpoint.
  again, losses = train.train_width(CFG, 16, stream, str(tmp_path / "b"), progress=False)
  assert losses == []
  for x, y in zip(leaves_full, jax.tree_util.tree_leaves(again)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_untrained_zoo_is_the_trained_seeds_starting_point(tmp_path):
  """The untrained baseline holds exactly the weights each trained seed started from."""
  docs = corpus.load_corpus("train")[:10]
  tokenizer.train_bpe([d.text for d in docs], CFG.vocab_size).save(str(tmp_path))
  module, _ = train.make_module(CFG, 16)
  start, _ = train._init(module, train._optimizer(CFG), CFG)  # pylint: disable=protected-access
  models = train.untrained_zoo(CFG, str(tmp_path))
  assert [m.name for m in models] == ["untrained-zoo-w16-s0", "untrained-zoo-w16-s1"]
  for i, m in enumerate(models):
    for x, y in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(m.params)):
      np.testing.assert_array_equal(np.asarray(x)[i], np.asarray(y))


def test_batches_depend_only_on_seed_and_step(stream):
  s = jax.numpy.asarray(stream)
  a = train.batch_for(s, 0, 5, 4, 16)
  assert np.array_equal(a, train.batch_for(s, 0, 5, 4, 16))
  assert not np.array_equal(a, train.batch_for(s, 1, 5, 4, 16))
  assert a.shape == (4, 17)


def test_zoo_dir_guard(tmp_path):
  docs = corpus.load_corpus("train")[:10]
  cfg = dataclasses.replace(CFG, steps=1, ckpt_every=1)
  train.train_zoo(cfg, str(tmp_path), docs=docs, progress=False)
  with pytest.raises(ValueError, match="different config"):
    train.train_zoo(dataclasses.replace(cfg, steps=2), str(tmp_path), docs=docs, progress=False)
  with pytest.raises(ValueError, match="empty corpus"):
    train.train_zoo(cfg, str(tmp_path / "x"), docs=[], progress=False)


def test_config_errors():
  with pytest.raises(ValueError, match="two seeds"):
    config.ZooConfig(seeds=(0,))
  from rosetta_jax.studies import config as study_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown preset"):
    study_config.get_preset("huge")
