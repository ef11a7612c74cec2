"""The studies' configuration: typed configs, their presets, validation, and the flags.

Every study binary is driven by one frozen dataclass (``StudyConfig`` for the
studies, ``FilterConfig`` beside it for data selection, ``RecordConfig`` for
``experiments.record``). Each validates itself in ``__post_init__``, so a bad
value is refused before any work or write, with the field named. The absl flags
of the binaries are derived from the fields here (``define_flags``): a field
``record_docs`` is the flag ``--record_docs``, a field of the nested zoo config
``zoo.steps`` is ``--zoo_steps``, and the help text is the field's line in the
class docstring. ``from_flags`` starts from ``--config`` (a saved config.json)
or ``--preset`` and applies the flags that were given.

The workdir. A study writes ``config.json`` into its workdir once the
configuration is valid and the models are resolved (``write_workdir_config``,
atomic); a later run in the same workdir must carry the same configuration
(``check_workdir``), else it is refused naming each differing field with both
values. ``FORMAT`` versions everything a workdir caches: a workdir written by
another format is refused with what to delete, never migrated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from typing import Any

from rosetta_jax import io as io_lib
from rosetta_jax.zoo.config import ZooConfig
from rosetta_jax.zoo.config import record as zoo_record
from rosetta_jax.zoo import vision as vision_zoo_lib
from rosetta_jax.zoo.vision import VisionZooConfig

FORMAT = 2
POOLINGS = ("mean", "max", "last")
MODALITIES = ("text", "vision")


class ConfigError(ValueError):
  """A configuration value that is out of range or inconsistent (names the field)."""


def _check(ok: bool, field: str, msg: str) -> None:
  if not ok:
    raise ConfigError(f"{field}: {msg}")


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """The studies on a zoo (or on a list of models).

  Attributes:
    modality: text (the GPT-NeoX zoo or language models on the embedded corpus) or
      vision (the vision zoo: ViT classifiers and a one-step generator, recorded
      on the generator's images on the canonical patch grid; docs/vision.md).
    zoo: the zoo to train (ignored for real models and for vision).
    vision_zoo: the vision zoo to train (modality vision).
    record_docs: held-out documents to record (0 = all; evenly spaced; text only:
      the vision probe images are the generator's samples).
    record_chars: characters kept from the start of each document (0 = all).
    record_len: context window of the recording forward pass, in tokens.
    record_batch: windows (text) or images (vision) per recording batch.
    depths: relative depths in [0, 1] of the layers to study, each model's layer
      whose share of the depth axis holds it (empty = every layer).
    pooling: how tokens pool into aligned units (mean, max or last).
    k: mutual-k-NN criterion (1 = best buddies).
    r_min: minimum r of a Rosetta pair (none = no floor).
    null_threshold: also require r above the permutation null's threshold.
    null_fdr: with null_threshold, the null rule's FDR level q in (0, 1) (none = the
      max-null rule: r above the strongest null pair of any permutation).
    null_permutations: independent dataset permutations of the null (>= 1; the
      declared default is 8).
    bootstrap: document-bootstrap resamples for the intervals.
    candidates: per-neuron candidates kept for the bootstrap re-matching.
    seed: seed of the bootstrap and of the permutation null.
    budgets: document fractions in (0, 1) of the unit-budget curve (beta on nested
      subsets of the documents; empty = none).
    untrained: also count untrained (random-init) zoo models at the same widths.
    identity_null: also run the unit-identity null (B's units permuted among units
      with the same text).
  """
  modality: str = "text"
  zoo: ZooConfig = ZooConfig()
  vision_zoo: VisionZooConfig = VisionZooConfig()
  record_docs: int = 0
  record_chars: int = 0
  record_len: int = 64
  record_batch: int = 16
  depths: tuple[float, ...] = ()
  pooling: str = "mean"
  k: int = 1
  r_min: float | None = None
  null_threshold: bool = True
  null_fdr: float | None = 0.05
  null_permutations: int = 8
  bootstrap: int = 200
  candidates: int = 8
  seed: int = 0
  budgets: tuple[float, ...] = (0.125, 0.25, 0.5)
  untrained: bool = True
  identity_null: bool = True

  def __post_init__(self):
    object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
    object.__setattr__(self, "budgets", tuple(float(b) for b in self.budgets))
    _check(all(0.0 < b < 1.0 for b in self.budgets), "budgets",
           f"must be document fractions in (0, 1), got {list(self.budgets)}")
    _check(_is_int(self.record_docs) and self.record_docs >= 0, "record_docs",
           f"must be an integer >= 0 (0 = all), got {self.record_docs!r}")
    _check(_is_int(self.record_chars) and self.record_chars >= 0, "record_chars",
           f"must be an integer >= 0 (0 = whole documents), got {self.record_chars!r}")
    _check(self.record_docs == 0 or self.record_docs >= 4, "record_docs",
           f"needs at least 4 documents for the permutation null and the document "
           f"bootstrap, got {self.record_docs}")
    for f in ("record_len", "record_batch", "k", "candidates", "null_permutations"):
      v = getattr(self, f)
      _check(_is_int(v) and v >= 1, f, f"must be an integer >= 1, got {v!r}")
    _check(_is_int(self.bootstrap) and self.bootstrap >= 2, "bootstrap",
           f"must be an integer >= 2, got {self.bootstrap!r}")
    _check(_is_int(self.seed) and self.seed >= 0, "seed", f"must be an integer >= 0, got {self.seed!r}")
    _check(all(0.0 <= d <= 1.0 for d in self.depths), "depths",
           f"must be numbers in [0, 1], got {list(self.depths)}")
    _check(self.pooling in POOLINGS, "pooling", f"must be one of {POOLINGS}, got {self.pooling!r}")
    _check(self.r_min is None or -1.0 <= self.r_min <= 1.0, "r_min",
           f"a correlation must lie in [-1, 1], got {self.r_min}")
    _check(self.null_fdr is None or 0.0 < self.null_fdr < 1.0, "null_fdr",
           f"must lie in (0, 1), got {self.null_fdr}")
    _check(self.modality in MODALITIES, "modality",
           f"must be one of {MODALITIES}, got {self.modality!r}")
    if self.modality == "text":
      _check(self.vision_zoo == VisionZooConfig(), "vision_zoo", "the vision zoo's settings "
             "(--vision_zoo_*) apply with --modality=vision only")
    if self.modality == "vision":
      # What the vision path does not have (yet), refused rather than ignored.
      _check(not self.untrained, "untrained", "the untrained baseline exists for the text "
             "zoo only; pass --nountrained with --modality=vision")
      _check(not self.identity_null, "identity_null", "the unit-identity null permutes "
             "units of the same text, and image cells have none; pass --noidentity_null "
             "with --modality=vision")
      _check(self.record_docs == 0, "record_docs", "with --modality=vision the probe images "
             "are the generator's samples: set their number with "
             "--vision_zoo_generator_num_samples (record_docs must be 0)")
      _check(self.record_chars == 0, "record_chars", "images have no characters to cut "
             "(record_chars must be 0 with --modality=vision)")
      _check(self.zoo == ZooConfig(), "zoo", "the text zoo's settings (--zoo_*) do not apply "
             "with --modality=vision; the vision zoo's are --vision_zoo_*")
      _check(self.vision_zoo.generator is not None, "vision_zoo.generator",
             "the vision study matches the generator against the discriminators; it "
             "needs one")

  @property
  def criterion(self):
    """The Rosetta criterion these settings declare (``match.rosetta.Criterion``)."""
    from rosetta_jax.match.rosetta import Criterion  # pylint: disable=g-import-not-at-top
    null = "none" if not self.null_threshold else "max" if self.null_fdr is None else "fdr"
    return Criterion(k=self.k, r_min=self.r_min, null=null,
                     q=self.null_fdr if null == "fdr" else None,
                     permutations=self.null_permutations)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """Settings of the data-selection study (claim 6; docs/data_filter.md).

  Attributes:
    target: the domain to select for.
    neurons: selector neurons per arm (the most target-selective of the Rosetta
      set, and as many of the matched non-Rosetta control).
    selection_fraction: share of the recorded documents the neurons are chosen on
      (the pair is re-matched on them: ``pairs.budget_documents``).
    pool_share: share of the other held-out documents in the pool (by a hash of
      the id); the rest are the evaluation set.
    pool_docs: at most this many pool documents.
    pool_chars: characters kept from each pool document.
    select_fraction: the token budget of every arm, as a share of the pool's
      tokens, in (0, 1).
    steps: continued-pretraining steps per run.
    lr: its peak learning rate.
    repeats: seeds per arm (data order, random draws), for the intervals.
    curve_points: held-out evaluations per run (the learning curves).
    pool_seed: seed of the random arm, the oracle's order and the control draw.
  """
  target: str = "math"
  neurons: int = 16
  selection_fraction: float = 0.4
  pool_share: float = 0.6
  pool_docs: int = 600
  pool_chars: int = 1500
  select_fraction: float = 0.15
  steps: int = 60
  lr: float = 1e-4
  repeats: int = 5
  curve_points: int = 6
  pool_seed: int = 0

  def __post_init__(self):
    for f in ("select_fraction", "selection_fraction", "pool_share"):
      v = getattr(self, f)
      _check(0 < v < 1, f, f"must lie in (0, 1), got {v}")
    for f in ("neurons", "steps", "repeats", "pool_docs", "pool_chars", "curve_points"):
      v = getattr(self, f)
      _check(_is_int(v) and v >= 1, f, f"must be an integer >= 1, got {v!r}")
    _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")


@dataclasses.dataclass(frozen=True)
class RecordConfig:
  """``experiments.record``: one model's sites on a corpus, into a store.

  Attributes:
    model: a Hugging Face model directory, an offline: name or a GGUF file.
    corpus: 'embedded' or a .jsonl[.xz] corpus file.
    split: corpus split (train, heldout or all).
    sites: 'mlp' (every layer) or comma-separated site names.
    align_with: other model directories whose tokenizers define the shared units.
    batch_size: windows per batch.
    max_len: tokens per context window (capped at the model's).
    pooling: pooling within units (mean, max or last).
    dtype: stored dtype (float32 or bfloat16).
    max_docs: record only the first N documents (0 = all).
    max_chars: cut documents to N characters (0 = whole).
  """
  model: str = ""
  corpus: str = "embedded"
  split: str = "heldout"
  sites: str = "mlp"
  align_with: tuple[str, ...] = ()
  batch_size: int = 8
  max_len: int = 512
  pooling: str = "mean"
  dtype: str = "float32"
  max_docs: int = 0
  max_chars: int = 0

  def __post_init__(self):
    object.__setattr__(self, "align_with", tuple(self.align_with))
    _check(bool(self.model.strip()), "model", "is required (a model directory or name)")
    _check(self.split in ("train", "heldout", "all"), "split",
           f"must be train, heldout or all, got {self.split!r}")
    _check(self.pooling in POOLINGS, "pooling", f"must be one of {POOLINGS}, got {self.pooling!r}")
    _check(self.dtype in ("float32", "bfloat16"), "dtype",
           f"must be float32 or bfloat16, got {self.dtype!r}")
    for f in ("batch_size", "max_len"):
      v = getattr(self, f)
      _check(_is_int(v) and v >= 1, f, f"must be an integer >= 1, got {v!r}")
    for f in ("max_docs", "max_chars"):
      v = getattr(self, f)
      _check(_is_int(v) and v >= 0, f, f"must be an integer >= 0 (0 = all), got {v!r}")
    _check(bool(self.sites.strip()), "sites", "is empty: use 'mlp' or site names")


PRESETS: dict[str, StudyConfig] = {
    # the README's first command: 5 sizes (8x neurons), 3 seeds each.
    "tiny": StudyConfig(
        zoo=ZooConfig(widths=(16, 32, 48, 64, 128), num_layers=2, steps=300, batch_size=16,
                      seq_len=64, ckpt_every=100, seeds=(0, 1, 2)),
        record_docs=0, record_chars=300, record_len=64, bootstrap=200),
    # 7 sizes (12x neurons), 3 layers, longer training; two architectures, each with
    # its own tokenizer, so every width has pairs across seeds and across architectures.
    "default": StudyConfig(
        zoo=ZooConfig(widths=(16, 32, 48, 64, 96, 128, 192), num_layers=3, steps=1000,
                      batch_size=16, seq_len=128, ckpt_every=200, lr=2e-3, warmup=50,
                      seeds=(0, 1, 2), families=("gpt_neox", "llama")),
        record_docs=0, record_chars=0, record_len=128, bootstrap=500),
    # the largest zoo that is sensible on one accelerator.
    "paper": StudyConfig(
        zoo=ZooConfig(widths=(32, 64, 128, 192, 256, 384, 512, 768), num_layers=6,
                      head_dim=32, steps=20000, batch_size=64, seq_len=256, vocab_size=8192,
                      ckpt_every=1000, lr=1e-3, warmup=500, seeds=(0, 1, 2)),
        record_len=256, bootstrap=1000),
}

# ``--modality=vision`` picks its preset here (``get_preset``). The vision zoo's own
# presets (``zoo/vision.py``); no untrained baseline or unit-identity null (refused).
VISION_PRESETS: dict[str, StudyConfig] = {
    # 5 widths (MLP neurons 64..512 over 2 layers, 8x), 3 seeds, 200 generated images.
    "tiny": StudyConfig(modality="vision", vision_zoo=vision_zoo_lib.PRESETS["tiny"],
                        record_batch=50, bootstrap=200, untrained=False, identity_null=False),
    # 5 widths (MLP neurons 192..1,536 over 3 layers), 3 seeds, 500 generated images.
    "default": StudyConfig(modality="vision", vision_zoo=vision_zoo_lib.PRESETS["default"],
                           record_batch=50, bootstrap=500, untrained=False,
                           identity_null=False),
}
PRESETS_BY_MODALITY = {"text": PRESETS, "vision": VISION_PRESETS}

RECORD_PRESETS: dict[str, RecordConfig] = {
    # placeholders for the model: --model is always given.
    "tiny": RecordConfig(model="-", max_docs=40, max_chars=600, max_len=64),
    "default": RecordConfig(model="-"),
}


def get_preset(name: str, presets: dict | None = None, modality: str | None = None):
  """A named preset (of ``presets``, else of the studies' ``modality``, text by default)."""
  if presets is None:
    if modality is not None and modality not in PRESETS_BY_MODALITY:
      raise ConfigError(f"modality: must be one of {MODALITIES}, got {modality!r}")
    presets = PRESETS_BY_MODALITY[modality or "text"]
  try:
    return presets[name]
  except KeyError:
    what = f" for --modality={modality}" if modality else ""
    raise ConfigError(f"preset: unknown preset {name!r}{what}; expected one of "
                      f"{sorted(presets)}") from None


# ----------------------------------------------------------------------------
# Dicts and files
# ----------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict:
  """A JSON-ready dict of a (nested) config dataclass."""
  return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls, d: dict, where: str = "config"):
  """``cls`` from a dict (nested dataclasses and tuples rebuilt); unknown fields are an error."""
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - names)
  if unknown:
    raise ConfigError(f"{where}: unknown field(s) {unknown} for {cls.__name__}; "
                      f"known: {sorted(names)}")
  kw = {}
  for k, v in d.items():
    t = _optional(hints[k])[0]           # a nested config may be optional (None)
    if dataclasses.is_dataclass(t) and isinstance(v, dict):
      v = from_dict(t, v, f"{where}.{k}")
    elif isinstance(v, list):
      v = tuple(v)
    kw[k] = v
  return cls(**kw)


def load_config(path: str, cls=StudyConfig):
  """A config from a JSON file: a study's config.json (``{"config": {...}}``) or the
  bare dict of ``to_dict``."""
  d = io_lib.read_json(path, what="a config file")
  if not isinstance(d, dict):
    raise ConfigError(f"{path}: not a config (a JSON object expected)")
  d = d.get("config", d)
  try:
    return from_dict(cls, d, where=path)
  except TypeError as e:
    raise ConfigError(f"{path}: not a {cls.__name__} ({e})") from None


# ----------------------------------------------------------------------------
# Flags derived from the fields
# ----------------------------------------------------------------------------


def _field_docs(cls) -> dict[str, str]:
  """{field: its text} from the 'Attributes:' section of a dataclass docstring."""
  doc = (cls.__doc__ or "").split("Attributes:", 1)[-1]
  out, name = {}, None
  for line in doc.splitlines():
    m = re.match(r"^\s{4}(\w+): (.*)$", line)
    if m:
      name = m.group(1)
      out[name] = m.group(2).strip()
    elif name and line.strip():
      out[name] += " " + line.strip()
  return out


def _flag_fields(cls, prefix: str = ""):
  """(flag name, path of attribute names, type, help) for every leaf field."""
  hints = typing.get_type_hints(cls)
  docs = _field_docs(cls)
  for f in dataclasses.fields(cls):
    t = hints[f.name]
    if dataclasses.is_dataclass(_optional(t)[0]):
      t = _optional(t)[0]
      for name, path, tt, h in _flag_fields(t, f"{prefix}{f.name}_"):
        yield name, (f.name,) + path, tt, h
    else:
      yield prefix + f.name, (f.name,), t, docs.get(f.name, f.name)


def _optional(t) -> tuple[Any, bool]:
  args = typing.get_args(t)
  if typing.get_origin(t) in (typing.Union, types.UnionType) and type(None) in args:
    return next(a for a in args if a is not type(None)), True
  return t, False


def define_flags(cls, flag_values=None, skip: tuple[str, ...] = ()) -> list[str]:
  """Defines one absl flag per leaf field of ``cls`` (default None: not given),
  except the fields in ``skip`` (a binary that parses those itself).

  Raises:
    ValueError: a flag of that name exists already (two configs share a field name).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS if flag_values is None else flag_values
  names = []
  for name, _, t, h in _flag_fields(cls):
    if name in skip:
      continue
    if name in fv:
      raise ValueError(f"flag --{name} of {cls.__name__} is defined twice")
    base, opt = _optional(t)
    origin = typing.get_origin(base)
    if opt and base in (int, float):
      flags.DEFINE_string(name, None, f"{h} ('none' to unset)", flag_values=fv)
    elif base is bool:
      flags.DEFINE_bool(name, None, h, flag_values=fv)
    elif base is int:
      flags.DEFINE_integer(name, None, h, flag_values=fv)
    elif base is float:
      flags.DEFINE_float(name, None, h, flag_values=fv)
    elif origin is tuple:
      flags.DEFINE_list(name, None, h, flag_values=fv)
    else:
      flags.DEFINE_string(name, None, h, flag_values=fv)
    names.append(name)
  return names


def _parse(name: str, t, raw):
  base, opt = _optional(t)
  if opt and isinstance(raw, str):
    if raw.strip().lower() in ("none", ""):
      return None
    try:
      return base(raw)
    except ValueError:
      raise ConfigError(f"{name}: expected a {base.__name__} or 'none', got {raw!r}") from None
  if typing.get_origin(base) is tuple:
    elem = typing.get_args(base)[0]
    try:
      return tuple(elem(x) for x in raw)
    except ValueError:
      raise ConfigError(f"{name}: expected {elem.__name__} values, got {raw}") from None
  return raw


def _replace_path(cfg, path, value):
  if len(path) == 1:
    return dataclasses.replace(cfg, **{path[0]: value})
  return dataclasses.replace(cfg, **{path[0]: _replace_path(getattr(cfg, path[0]), path[1:],
                                                              value)})


def apply_flags(cfg, flag_values=None, skip: tuple[str, ...] = (), **overrides):
  """``cfg`` with every derived flag that was given on the command line applied
  (``overrides`` by field name win), validated once at the end."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS if flag_values is None else flag_values
  changes = {}
  for name, path, t, _ in _flag_fields(type(cfg)):
    if name not in skip and name in fv and fv[name].present:
      changes[path] = _parse(name, t, fv[name].value)
  for k, v in overrides.items():
    if v is not None:
      changes[(k,)] = v
  d = to_dict(cfg)
  for path, v in changes.items():
    sub = d
    for i, p in enumerate(path[:-1]):
      if sub[p] is None:
        raise ConfigError(f"{'.'.join(path[:i + 1])}: is unset (None) in this config, so "
                          f"--{'_'.join(path)} cannot apply")
      sub = sub[p]
    sub[path[-1]] = list(v) if isinstance(v, tuple) else v
  return from_dict(type(cfg), d)


# ----------------------------------------------------------------------------
# The workdir
# ----------------------------------------------------------------------------


def record_dict(cfg) -> dict:
  """``to_dict(cfg)`` less a study config's fields of the other modality: a text run's
  record has no ``modality`` or ``vision_zoo`` (so workdirs written before vision
  existed still match), a vision run's no text ``zoo``."""
  d = to_dict(cfg)
  if isinstance(cfg, StudyConfig):
    for k in (("modality", "vision_zoo") if cfg.modality == "text" else ("zoo",)):
      d.pop(k)
    if "zoo" in d:                  # a GPT-NeoX-only zoo: no family fields (zoo.config.record)
      keep = zoo_record(cfg.zoo)
      d["zoo"] = {k: v for k, v in d["zoo"].items() if k in keep}
  return d


def workdir_record(study: str, models: str, cfg, **extra) -> dict:
  """What config.json holds: the format, the study, the models and the config."""
  return {"format": FORMAT, "study": study, "models": models, "config": record_dict(cfg),
          **json.loads(json.dumps(extra, default=io_lib.json_default))}


def _diff(old, new, path=""):
  if isinstance(old, dict) and isinstance(new, dict):
    for k in sorted(set(old) | set(new)):
      yield from _diff(old.get(k, "<absent>"), new.get(k, "<absent>"),
                       f"{path}.{k}" if path else k)
  elif old != new:
    yield f"{path}: {json.dumps(old)} in the workdir, {json.dumps(new)} now"


def check_workdir(workdir: str, record: dict) -> bool:
  """Checks that ``workdir`` holds nothing or the same run; True if it holds it.

  Raises:
    ConfigError: the workdir holds another configuration (each differing field
      named, with both values) or was written by another format.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return False
  old = io_lib.read_json(path, what="the workdir's config")
  if not isinstance(old, dict) or old.get("format") != FORMAT:
    raise ConfigError(
        f"workdir: {workdir} was written by another version of rosetta_jax (cache format "
        f"{old.get('format', 1) if isinstance(old, dict) else '?'}; this version reads "
        f"format {FORMAT}): delete {workdir} or choose another --workdir")
  diffs = list(_diff(old, json.loads(json.dumps(record))))
  if diffs:
    raise ConfigError(f"workdir: {workdir} holds a run with a different configuration:\n  "
                      + "\n  ".join(diffs) + "\nchoose another --workdir or delete it")
  return True


def write_workdir_config(workdir: str, record: dict) -> None:
  """Writes config.json atomically (call once the run is validated and resolved)."""
  os.makedirs(workdir, exist_ok=True)
  io_lib.write_json(os.path.join(workdir, "config.json"), record)
