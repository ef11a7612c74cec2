"""Trains the embedded model zoo: one or two architectures (GPT-NeoX, Llama-style)
at several widths, several seeds each.

The seeds of one width are trained together, ``vmap``-ed: one compiled step
updates every seed's parameters (different inits, different data orders). The
batch of step ``s`` for seed ``k`` depends only on ``(k, s)``, and checkpoints
hold the whole optimiser state, so a run killed at any point and restarted with
the same command continues from its last checkpoint and ends with exactly the
weights an uninterrupted run would have.

Layout of a zoo directory::

    zoo_dir/zoo.json                the ZooConfig and corpus hash (guards re-use)
    zoo_dir/tokenizer.json          the byte-level BPE trained on the corpus
    zoo_dir/w{width}/ckpt/{step}/   orbax checkpoints (params + opt state, all seeds)
    zoo_dir/w{width}/final/         final parameters of all seeds (orbax)
    zoo_dir/llama/tokenizer.json    the Llama-style family's own BPE (when trained)
    zoo_dir/llama/w{width}/...      its checkpoints and final parameters, as above
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from tqdm.auto import tqdm

from rosetta_jax.data import corpus as corpus_lib
from rosetta_jax.data import tokenizer as tokenizer_lib
from rosetta_jax.io import atomic_write_json, read_json
from rosetta_jax.models import base, gpt_neox, llama
from rosetta_jax.zoo import config as zoo_config
from rosetta_jax.zoo.config import ZooConfig, to_dict

MODULES = {"gpt_neox": gpt_neox.GPTNeoX, "llama": llama.Llama}


def model_name(width: int, seed: int, family: str = "gpt_neox") -> str:
  """``zoo-w64-s0`` (GPT-NeoX, the first family) or ``zoo-llama-w64-s0``."""
  return f"zoo-w{width}-s{seed}" if family == "gpt_neox" else f"zoo-{family}-w{width}-s{seed}"


def family_of(name: str) -> str:
  """The zoo family of a model name from ``model_name`` (untrained prefix allowed)."""
  stem = name.rsplit("/", 1)[-1]
  return "llama" if "zoo-llama-" in stem else "gpt_neox"


def family_dir(zoo_dir: str, family: str) -> str:
  """Where a family's tokenizer and widths live (GPT-NeoX: the zoo directory itself)."""
  return zoo_dir if family == "gpt_neox" else os.path.join(zoo_dir, family)


def make_module(cfg: ZooConfig, width: int, family: str = "gpt_neox"):
  mcfg = cfg.model_config(width, family)
  return MODULES[family](mcfg), mcfg


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def token_stream(tok: tokenizer_lib.Tokenizer, docs: Sequence[corpus_lib.Document]) -> np.ndarray:
  """All training documents' tokens, each followed by EOS, as one int32 array."""
  eos = tok.backend.token_to_id(tokenizer_lib.EOS)
  ids = tok.encode_ids([d.text for d in docs])
  out = np.concatenate([np.append(x, eos) for x in ids]).astype(np.int32)
  return out


def batch_for(stream: jax.Array, seed: int, step: jax.Array, batch: int, seq_len: int):
  """The [batch, seq_len + 1] windows seed ``seed`` trains on at ``step``.

  A pure function of (seed, step): resume reproduces the uninterrupted order.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(1000 + seed), step)
  starts = jax.random.randint(key, (batch,), 0, stream.shape[0] - seq_len - 1)
  idx = starts[:, None] + jnp.arange(seq_len + 1)[None, :]
  return stream[idx]


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------


def _optimizer(cfg: ZooConfig) -> optax.GradientTransformation:
  warmup = min(cfg.warmup, cfg.steps - 1)
  sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(cfg.steps, warmup + 1),
                                             end_value=cfg.lr * 0.1)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=cfg.weight_decay))


def loss_fn(module, params, windows):
  """Mean next-token cross-entropy of [batch, seq + 1] windows."""
  logits, _ = module.apply({"params": params}, windows[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()


def _make_step(module, opt, cfg: ZooConfig):
  seeds = jnp.asarray(cfg.seeds)

  def one(params, opt_state, seed, stream, step):
    windows = batch_for(stream, seed, step, cfg.batch_size, cfg.seq_len)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(module, p, windows))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def step_fn(params, opt_state, stream, step):
    return jax.vmap(one, in_axes=(0, 0, 0, None, None))(params, opt_state, seeds, stream, step)

  return jax.jit(step_fn, donate_argnums=(0, 1))


def _init(module, opt, cfg: ZooConfig):
  def one(seed):
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"]
    return params, opt.init(params)
  return jax.jit(jax.vmap(one))(jnp.asarray(cfg.seeds))


def train_width(cfg: ZooConfig, width: int, stream: np.ndarray, width_dir: str,
                stop_after: int | None = None, progress: bool = True,
                family: str = "gpt_neox") -> tuple[dict, list]:
  """Trains (or resumes, or loads) every seed of one width of one family.

  Args:
    cfg: the zoo config.
    width: the residual width.
    stream: training token stream.
    width_dir: ``zoo_dir/w{width}``.
    stop_after: stop after this many steps (simulates an interruption; tests).
    progress: show a progress bar.
    family: the architecture (``zoo.config.FAMILIES``).

  Returns:
    (stacked params [seeds, ...], losses logged this call as (step, [loss per seed])).
  """
  module, _ = make_module(cfg, width, family)
  final_dir = os.path.join(width_dir, "final")
  if os.path.exists(final_dir):
    return _restore(final_dir, module, cfg), []
  opt = _optimizer(cfg)
  params, opt_state = _init(module, opt, cfg)
  options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=1)
  losses = []
  with ocp.CheckpointManager(os.path.abspath(os.path.join(width_dir, "ckpt")),
                             options=options) as mngr:
    start = 0
    if mngr.latest_step() is not None:
      start = mngr.latest_step()
      state = mngr.restore(start, args=ocp.args.StandardRestore(
          {"params": params, "opt_state": opt_state}))
      params, opt_state = state["params"], state["opt_state"]
      logging.info("w%d: resumed from step %d", width, start)
    step_fn = _make_step(module, opt, cfg)
    stream = jnp.asarray(stream)
    bar = tqdm(range(start, cfg.steps), desc=f"train {family} w{width} x{len(cfg.seeds)} seeds",
               disable=not progress, initial=start, total=cfg.steps, leave=False)
    for step in bar:
      params, opt_state, loss = step_fn(params, opt_state, stream, jnp.int32(step))
      done = step + 1
      if done % 10 == 0 or done == cfg.steps:
        loss = np.asarray(loss)
        losses.append((done, loss.tolist()))
        bar.set_postfix(loss=f"{loss.mean():.3f}")
      if done % cfg.ckpt_every == 0 or done == cfg.steps:
        mngr.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
        mngr.wait_until_finished()
      if stop_after is not None and done >= stop_after:
        return params, losses
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(final_dir), params)
  ckptr.wait_until_finished()
  return params, losses


def _restore(final_dir: str, module, cfg: ZooConfig):
  opt = _optimizer(cfg)
  abstract, _ = jax.eval_shape(lambda: _init(module, opt, cfg))
  return ocp.StandardCheckpointer().restore(os.path.abspath(final_dir), abstract)


def _check_zoo_dir(zoo_dir: str, meta: dict) -> None:
  path = os.path.join(zoo_dir, "zoo.json")
  if os.path.exists(path):
    old = read_json(path, "the zoo's config record")
    if old != meta:
      raise ValueError(
          f"{zoo_dir} holds a zoo trained with a different config or corpus; use another "
          f"directory (existing: {json.dumps(old)[:300]}...)")
  else:
    atomic_write_json(path, meta)


def train_zoo(cfg: ZooConfig, zoo_dir: str, docs: Sequence[corpus_lib.Document] | None = None,
              progress: bool = True) -> list[base.Model]:
  """Trains (or resumes, or loads) the whole zoo; returns one Model per (width, seed).

  Models are ordered by width, then seed. Re-running with the same directory
  resumes; a directory holding a different zoo is an error.
  """
  docs = list(docs) if docs is not None else corpus_lib.load_corpus("train")
  if not docs:
    raise ValueError("cannot train the zoo on an empty corpus")
  meta = {"zoo": zoo_config.record(cfg), "corpus": corpus_lib.corpus_hash(docs)}
  _check_zoo_dir(zoo_dir, json.loads(json.dumps(meta)))
  models = []
  for family in cfg.families:
    fdir = family_dir(zoo_dir, family)
    tok = family_tokenizer(cfg, family, fdir, docs)
    stream = token_stream(tok, docs)
    for width in tqdm(cfg.widths, desc=f"zoo ({family})", disable=not progress):
      params, _ = train_width(cfg, width, stream, os.path.join(fdir, f"w{width}"),
                              progress=progress, family=family)
      module, mcfg = make_module(cfg, width, family)
      for i, seed in enumerate(cfg.seeds):
        p = jax.tree_util.tree_map(lambda x: x[i], params)
        models.append(base.Model(model_name(width, seed, family), module, p, mcfg, tok))
  return models


def family_tokenizer(cfg: ZooConfig, family: str, fdir: str, docs) -> tokenizer_lib.Tokenizer:
  """The family's BPE, trained on the corpus once and kept in its directory."""
  if os.path.exists(os.path.join(fdir, tokenizer_lib.FILENAME)):
    return tokenizer_lib.Tokenizer.load(fdir)
  tok = tokenizer_lib.train_bpe((d.text for d in docs), cfg.vocab_for(family),
                                split_digits=family == "llama")
  os.makedirs(fdir, exist_ok=True)
  tok.save(fdir)
  return tok


def untrained_zoo(cfg: ZooConfig, zoo_dir: str) -> list[base.Model]:
  """The zoo's models at initialisation (same widths, seeds and tokenizer, no
  training step): the untrained baseline. Needs the trained zoo's tokenizer."""
  models = []
  for family in cfg.families:
    tok = tokenizer_lib.Tokenizer.load(family_dir(zoo_dir, family))
    for width in cfg.widths:
      module, mcfg = make_module(cfg, width, family)
      # The trained seeds' own starting points (``_init``'s vmapped init), in one
      # compiled call per width.
      stacked = jax.jit(jax.vmap(lambda s, m=module: m.init(
          jax.random.PRNGKey(s), jnp.zeros((1, 8), jnp.int32))["params"]))(
              jnp.asarray(cfg.seeds))
      for i, seed in enumerate(cfg.seeds):
        params = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
        models.append(base.Model("untrained-" + model_name(width, seed, family), module,
                                 params, mcfg, tok))
  return models


def heldout_loss(model: base.Model, stream: np.ndarray, seq_len: int, n: int = 16) -> float:
  """Mean next-token loss on ``n`` fixed windows of a held-out token stream."""
  starts = np.linspace(0, len(stream) - seq_len - 2, n).astype(int)
  windows = jnp.asarray(np.stack([stream[s:s + seq_len + 1] for s in starts]))
  return float(jax.jit(lambda p: loss_fn(model.module, p, windows))(model.params))


def continue_training(model: base.Model, stream: np.ndarray, steps: int, *, lr: float = 1e-3,
                      batch_size: int = 16, seq_len: int = 64, seed: int = 0,
                      warmup: int = 10, eval_every: int = 0,
                      on_eval=None) -> tuple[base.Model, list[float]]:
  """Continues pretraining one model on a token stream (data filtering, claim 6).

  AdamW with linear warmup then cosine decay; the batch order is a function of
  ``(seed, step)`` as in the zoo. ``on_eval(steps_done, params)``, when given, is
  called after every ``eval_every`` steps and after the last (a learning curve).

  Returns:
    (the updated Model, the loss every 10 steps).
  """
  if len(stream) <= seq_len + 1:
    raise ValueError(f"stream of {len(stream)} tokens is too short for seq_len={seq_len}")
  cfg = ZooConfig(steps=steps, lr=lr, warmup=warmup, batch_size=batch_size, seq_len=seq_len)
  opt = _optimizer(cfg)
  module = model.module

  @jax.jit
  def step_fn(params, opt_state, stream, step):
    windows = batch_for(stream, seed, step, batch_size, seq_len)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(module, p, windows))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = model.params
  opt_state = opt.init(params)
  stream = jnp.asarray(stream)
  losses = []
  for step in range(steps):
    params, opt_state, loss = step_fn(params, opt_state, stream, jnp.int32(step))
    if (step + 1) % 10 == 0:
      losses.append(float(loss))
    if on_eval is not None and ((eval_every and (step + 1) % eval_every == 0)
                                or step + 1 == steps):
      on_eval(step + 1, params)
  return dataclasses.replace(model, params=params), losses
