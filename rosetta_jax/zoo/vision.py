"""The vision zoo: ViT classifiers at several widths and seeds, and a generator.

``train_vision_zoo(cfg, zoo_dir)`` trains (or resumes, or loads)

* ViT classifiers (``models/vit.py`` plus a linear head on the class token) on the
  embedded Fashion-MNIST training split, at every width of ``cfg.widths`` with
  every seed of ``cfg.seeds``; the seeds of one width train together, ``vmap``-ed
  (one compiled step updates every seed: different inits, different batches);
* the one-step generator (``models/dit.py``, MeanFlow: ``zoo/generator.py``) on the
  same images, and the images it generates (stored with the run, so a resumed
  run probes with the same images).

Resumable and bit-identical: the batch of step ``s`` for seed ``k`` is a pure
function of ``(k, s)``; orbax checkpoints hold parameters and optimiser state,
so a run killed at any point and restarted with the same command ends with
exactly the weights of an uninterrupted run.

Layout of a vision zoo directory::

    zoo_dir/vision_zoo.json          the config and images hash (guards re-use)
    zoo_dir/vit-w{width}/ckpt/{step} orbax checkpoints (all seeds)
    zoo_dir/vit-w{width}/final/      final parameters of all seeds
    zoo_dir/generator/...            the generator's checkpoints and final/
    zoo_dir/generator/samples.npz    its generated images, labels and noise
    zoo_dir/summary.json             held-out accuracy of every classifier, ...
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from tqdm.auto import tqdm

from rosetta_jax.data import images as images_lib
from rosetta_jax.models import vision, vit

MEAN, STD = (0.5,), (0.5,)  # zoo inputs: greyscale pixels scaled to [-1, 1]


# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
  """An AdamW run: steps, batch, warmup-cosine learning rate, checkpoints."""
  steps: int = 400
  batch_size: int = 64
  lr: float = 2e-3
  warmup: int = 40
  weight_decay: float = 0.05
  ckpt_every: int = 100

  def __post_init__(self):
    if self.steps < 1 or self.ckpt_every < 1 or self.batch_size < 1:
      raise ValueError(f"steps, ckpt_every and batch_size must be >= 1: {self}")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """The one-step MeanFlow DiT (``models/dit.py``) and its generated probe set.

  Attributes:
    hidden_size, num_layers, num_heads, mlp_ratio, patch_size: the DiT's shape.
    seed: its training seed.
    schedule: its optimiser run.
    flow_fraction: share of training pairs with r = t (plain flow matching); the
      rest have r < t (MeanFlow's average velocity).
    adaptive_p: MeanFlow's adaptive loss weight 1 / (|error|^2 + 1e-3)^p.
    num_samples: images generated as the probe set (classes in turn).
    sample_seed: seed of their noise.
  """
  hidden_size: int = 64
  num_layers: int = 4
  num_heads: int = 4
  mlp_ratio: int = 4
  patch_size: int = 4
  seed: int = 0
  schedule: Schedule = Schedule(steps=1500, batch_size=64, lr=1e-3, warmup=100,
                                weight_decay=0.0, ckpt_every=250)
  flow_fraction: float = 0.75
  adaptive_p: float = 1.0
  num_samples: int = 500
  sample_seed: int = 12345


@dataclasses.dataclass(frozen=True)
class VisionZooConfig:
  """ViT classifiers at several widths, several seeds each, and the generator.

  Attributes:
    widths: hidden sizes, one model size each; MLP neurons ``mlp_ratio * width``.
    seeds: training seeds per width.
    num_layers: layers of every classifier.
    head_dim: attention head size; heads = width // head_dim.
    mlp_ratio: MLP neurons per hidden unit.
    patch_size: patch side on the 28-pixel images (4: a 7 x 7 grid).
    schedule: the classifiers' optimiser run.
    generator: the generator (None: no generator).
  """
  widths: tuple[int, ...] = (16, 24, 32, 64, 128)
  seeds: tuple[int, ...] = (0, 1, 2)
  num_layers: int = 3
  head_dim: int = 8
  mlp_ratio: int = 4
  patch_size: int = 4
  schedule: Schedule = Schedule()
  generator: GeneratorConfig | None = GeneratorConfig()

  def __post_init__(self):
    if len(self.seeds) < 2:
      raise ValueError("the vision zoo needs at least two seeds per width")
    if len(set(self.widths)) != len(self.widths) or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"duplicate widths or seeds: {self.widths}, {self.seeds}")
    for w in self.widths:
      if w % self.head_dim:
        raise ValueError(f"width {w} is not a multiple of head_dim {self.head_dim}")
    if 28 % self.patch_size:
      raise ValueError(f"patch_size {self.patch_size} does not divide the 28-pixel images")

  def model_config(self, width: int) -> vit.ViTConfig:
    return vit.ViTConfig(hidden_size=width, num_layers=self.num_layers,
                         num_heads=width // self.head_dim,
                         intermediate_size=self.mlp_ratio * width, image_size=28,
                         patch_size=self.patch_size, num_channels=1, layer_norm_eps=1e-6)


PRESETS = {
    # 5 widths, MLP neurons 32..256 (8x), 3 seeds, 7-pixel patches (a 4 x 4 grid).
    "tiny": VisionZooConfig(
        widths=(8, 16, 24, 32, 64), seeds=(0, 1, 2), num_layers=2, patch_size=7,
        schedule=Schedule(steps=150, batch_size=64, lr=3e-3, warmup=15, ckpt_every=50),
        generator=GeneratorConfig(
            hidden_size=48, num_layers=3, num_heads=4, num_samples=200,
            schedule=Schedule(steps=400, batch_size=64, lr=2e-3, warmup=40,
                              weight_decay=0.0, ckpt_every=100))),
    "default": VisionZooConfig(),
}


def get_preset(name: str) -> VisionZooConfig:
  try:
    return PRESETS[name]
  except KeyError:
    raise ValueError(f"unknown vision zoo preset {name!r}; known: {sorted(PRESETS)}") from None


def to_dict(cfg: Any) -> dict:
  return json.loads(json.dumps(dataclasses.asdict(cfg)))


def model_name(width: int, seed: int) -> str:
  return f"vit-w{width}-s{seed}"


# ----------------------------------------------------------------------------
# The shared trainer: seeds vmapped, orbax checkpoints, bit-identical resume
# ----------------------------------------------------------------------------


def optimizer(s: Schedule) -> optax.GradientTransformation:
  warmup = min(s.warmup, s.steps - 1)
  sched = optax.warmup_cosine_decay_schedule(0.0, s.lr, warmup, max(s.steps, warmup + 1),
                                             end_value=s.lr * 0.1)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=s.weight_decay))


def step_key(seed, step) -> jax.Array:
  """The randomness of one (seed, step): a pure function of both."""
  return jax.random.fold_in(jax.random.PRNGKey(1000 + seed), step)


@functools.lru_cache(maxsize=16)
def _compiled(init: Callable, loss: Callable, seeds: tuple[int, ...], schedule: Schedule):
  """(init_all, step_fn, abstract state) of one vmapped run, cached: ``init`` and
  ``loss`` come from cached factories, so re-running a config in one process (a
  resume) reuses the compiled functions."""
  opt = optimizer(schedule)
  seeds_arr = jnp.asarray(seeds)

  def init_all():
    def one(seed):
      params = init(jax.random.PRNGKey(seed))
      return params, opt.init(params)
    return jax.vmap(one)(seeds_arr)

  def one_step(params, opt_state, seed, data, step):
    value, grads = jax.value_and_grad(loss)(params, data, step_key(seed, step))
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  step_fn = jax.jit(jax.vmap(one_step, in_axes=(0, 0, 0, None, None)), donate_argnums=(0, 1))
  return jax.jit(init_all), step_fn, jax.eval_shape(init_all)


def train_seeds(init: Callable, loss: Callable, seeds: Sequence[int], schedule: Schedule,
                data, run_dir: str, stop_after: int | None = None, progress: bool = True,
                desc: str = "train") -> tuple[Any, list]:
  """Trains (or resumes, or loads) one model per seed, all seeds in one vmapped step.

  Args:
    init: ``init(key) -> params`` of one model.
    loss: ``loss(params, data, key) -> scalar`` of one model on the batch drawn
      with ``key`` (``step_key(seed, step)``).
    seeds: the seeds (init key ``PRNGKey(seed)``).
    schedule: the optimiser run.
    data: the training arrays (a pytree), shared by every seed.
    run_dir: where ``ckpt/`` and ``final/`` live.
    stop_after: stop after this many steps (simulates an interruption; tests).
    progress: show a progress bar.

  Returns:
    (params stacked over seeds, [(step, [loss per seed])] logged this call).
  """
  seeds = tuple(int(s) for s in seeds)
  init_all, step_fn, (abstract, _) = _compiled(init, loss, seeds, schedule)
  final_dir = os.path.abspath(os.path.join(run_dir, "final"))
  if os.path.exists(final_dir):
    return ocp.StandardCheckpointer().restore(final_dir, abstract), []
  seeds_arr = jnp.asarray(seeds)
  params, opt_state = init_all()
  losses = []
  options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=1)
  with ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "ckpt")),
                             options=options) as mngr:
    start = 0
    if mngr.latest_step() is not None:
      start = mngr.latest_step()
      state = mngr.restore(start, args=ocp.args.StandardRestore(
          {"params": params, "opt_state": opt_state}))
      params, opt_state = state["params"], state["opt_state"]
      logging.info("%s: resumed from step %d", desc, start)
    bar = tqdm(range(start, schedule.steps), desc=desc, disable=not progress, initial=start,
               total=schedule.steps, leave=False)
    for step in bar:
      params, opt_state, value = step_fn(params, opt_state, seeds_arr, data, jnp.int32(step))
      done = step + 1
      if done % 10 == 0 or done == schedule.steps:
        value = np.asarray(value)
        losses.append((done, value.tolist()))
        bar.set_postfix(loss=f"{value.mean():.3f}")
      if done % schedule.ckpt_every == 0 or done == schedule.steps:
        mngr.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
        mngr.wait_until_finished()
      if stop_after is not None and done >= stop_after:
        return params, losses
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(final_dir, params)
  ckptr.wait_until_finished()
  return params, losses


# ----------------------------------------------------------------------------
# Classifiers
# ----------------------------------------------------------------------------


class ViTClassifier(nn.Module):
  """A ``vit.ViT`` encoder (params ``encoder``) and a linear head on its class token."""
  config: vit.ViTConfig
  num_classes: int = 10

  @nn.compact
  def __call__(self, pixels):
    hidden, _, _ = vit.ViT(self.config, name="encoder")(pixels)
    return nn.Dense(self.num_classes, name="head")(hidden[:, 0])


def scaled(images) -> jax.Array:
  """uint8 [N, 28, 28, 1] -> float32 in [-1, 1] (the zoo's ``MEAN``/``STD``)."""
  return images_lib.to_model_input(images, images.shape[1:3], MEAN, STD, channels=1)


@functools.lru_cache(maxsize=32)
def classifier_init(module: ViTClassifier):
  return lambda key: module.init(key, jnp.zeros((1, 28, 28, 1)))["params"]


@functools.lru_cache(maxsize=32)
def classifier_loss(module: ViTClassifier, batch_size: int):
  def loss(params, data, key):
    idx = jax.random.randint(key, (batch_size,), 0, data["labels"].shape[0])
    logits = module.apply({"params": params}, data["x"][idx])
    return optax.softmax_cross_entropy_with_integer_labels(logits, data["labels"][idx]).mean()
  return loss


@functools.lru_cache(maxsize=32)
def _predict(module: ViTClassifier):
  return jax.jit(lambda p, xb: jnp.argmax(module.apply({"params": p}, xb), -1))


def accuracy(module: ViTClassifier, params, x, labels, batch: int = 500) -> float:
  """Top-1 accuracy of one classifier on ``x`` [N, 28, 28, 1] float."""
  fwd = _predict(module)
  pred = np.concatenate([np.asarray(fwd(params, x[i:i + batch]))
                         for i in range(0, len(x), batch)])
  return float((pred == np.asarray(labels)).mean())


def as_vision_model(name: str, cfg: vit.ViTConfig, params) -> vision.VisionModel:
  """The encoder of a trained classifier as a ``VisionModel`` (what studies record)."""
  return vision.VisionModel(name, vit.ViT(cfg), params["encoder"], cfg, image_mean=MEAN,
                            image_std=STD, image_size=(28, 28))


def train_classifiers(cfg: VisionZooConfig, width: int, train: images_lib.ImageSet,
                      run_dir: str, stop_after: int | None = None, progress: bool = True):
  """Trains (or resumes, or loads) every seed of one width; returns stacked params."""
  module = ViTClassifier(cfg.model_config(width))
  data = {"x": scaled(train.images), "labels": jnp.asarray(train.labels, jnp.int32)}
  return train_seeds(classifier_init(module), classifier_loss(module, cfg.schedule.batch_size),
                     cfg.seeds,
                     cfg.schedule, data, run_dir, stop_after, progress,
                     desc=f"vit w{width} x{len(cfg.seeds)} seeds")


# ----------------------------------------------------------------------------
# The whole zoo
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VisionZoo:
  """A trained vision zoo.

  Attributes:
    classifiers: one ``VisionModel`` per (width, seed), ordered by width then seed.
    generator: the ``dit.GeneratorModel`` (None without a generator).
    samples: its generated probe images (``generator.Samples``), or None.
    summary: held-out accuracy per classifier, generator loss, ... (summary.json).
  """
  classifiers: list
  generator: Any
  samples: Any
  summary: dict


def _check_zoo_dir(zoo_dir: str, meta: dict) -> None:
  path = os.path.join(zoo_dir, "vision_zoo.json")
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != meta:
      raise ValueError(f"{zoo_dir} holds a vision zoo trained with a different config or "
                       f"images; use another directory (existing: {json.dumps(old)[:300]}...)")
  else:
    os.makedirs(zoo_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(meta, f, indent=1)
    os.replace(path + ".tmp", path)


def train_vision_zoo(cfg: VisionZooConfig, zoo_dir: str,
                     train: images_lib.ImageSet | None = None,
                     heldout: images_lib.ImageSet | None = None,
                     progress: bool = True) -> VisionZoo:
  """Trains (or resumes, or loads) the classifiers and the generator.

  Args:
    cfg: the zoo config.
    zoo_dir: the zoo directory; re-running resumes; another zoo there is an error.
    train: training images (default the embedded ``train`` split).
    heldout: images for the accuracy summary (default 2,000 evenly spaced test
      images).
    progress: show progress bars.
  """
  from rosetta_jax.zoo import generator as gen_lib
  train = train if train is not None else images_lib.load_images("train")
  heldout = heldout if heldout is not None else images_lib.load_images("heldout").evenly(2000)
  meta = {"vision_zoo": to_dict(cfg), "images": images_lib.images_hash(train)}
  _check_zoo_dir(zoo_dir, meta)
  x_held = scaled(heldout.images)
  classifiers, summary = [], {"accuracy": {}}
  for width in cfg.widths:
    params, _ = train_classifiers(cfg, width, train, os.path.join(zoo_dir, f"vit-w{width}"),
                                  progress=progress)
    mcfg = cfg.model_config(width)
    module = ViTClassifier(mcfg)
    for i, seed in enumerate(cfg.seeds):
      p = jax.tree_util.tree_map(lambda x: x[i], params)
      name = model_name(width, seed)
      summary["accuracy"][name] = accuracy(module, p, x_held, heldout.labels)
      classifiers.append(as_vision_model(name, mcfg, p))
  generator = samples = None
  if cfg.generator is not None:
    generator, samples, gsum = gen_lib.train_generator(
        cfg.generator, train, os.path.join(zoo_dir, "generator"), progress=progress)
    summary["generator"] = gsum
    # How often the widest classifiers name the class the generator was asked for.
    widest = cfg.widths[-1]
    module = ViTClassifier(cfg.model_config(widest))
    params = jax.tree_util.tree_map(lambda x: x[0], train_classifiers(
        cfg, widest, train, os.path.join(zoo_dir, f"vit-w{widest}"), progress=False)[0])
    summary["generator"]["classified_as_asked"] = accuracy(
        module, params, scaled(samples.images.images), samples.images.labels)
  tmp = os.path.join(zoo_dir, "summary.json.tmp")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=1)
  os.replace(tmp, os.path.join(zoo_dir, "summary.json"))
  return VisionZoo(classifiers, generator, samples, summary)
