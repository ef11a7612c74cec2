"""Loads Hugging Face checkpoints and GGUF files into the Flax ports, tensor by tensor.

``load_model(path)`` takes a checkpoint directory (``config.json`` and safetensors,
single or sharded with ``model.safetensors.index.json``, or ``pytorch_model.bin``,
single or sharded), a GGUF file (``x.gguf``), or a hub id present in the Hugging
Face cache (offline). Everything that can be checked without the weights is checked
first (the architecture, the config, every weight file's header against its size,
the tokenizer against the vocabulary), so a wrong or damaged input is refused by
name before a tensor is converted. Each tensor is then read, renamed and transposed
by its family's converter, checked against the shape the config implies, cast, and
placed at once with its sharding; the host never holds more than one converted
tensor beyond the placed parameters.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.models import base, checkpoint, gguf_io, partition, registry
from rosetta_jax.models.checkpoint import checkpoint_files  # noqa: F401 (re-export)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "tokenizer.model", "vocab.json")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a model's files are: a directory, and a GGUF file in it or None."""
  name: str
  model_dir: Path
  gguf: Path | None = None


def _is_gguf(path: Path) -> bool:
  if path.suffix.lower() == ".gguf":
    return True
  with open(path, "rb") as f:
    return f.read(4) == gguf_io.MAGIC


def resolve(name_or_path: str | os.PathLike, gguf_file: str | os.PathLike | None = None
            ) -> Source:
  """A local directory, a GGUF file, or the cached snapshot of a hub id (offline).

  Raises:
    FileNotFoundError: naming the path (and the cache searched).
    ValueError: a file that is neither a GGUF file nor a directory.
  """
  name = str(name_or_path)
  path = Path(name_or_path).expanduser()
  if gguf_file is not None:
    g = Path(gguf_file).expanduser()
    if not g.is_absolute():
      g = resolve(name_or_path).model_dir / g
    if not g.is_file():
      raise FileNotFoundError(f"GGUF file {g} does not exist")
    return Source(name, g.parent, g)
  if path.is_dir():
    return Source(name, path)
  if path.is_file():
    if _is_gguf(path):
      return Source(name, path.parent, path)
    raise ValueError(f"{path} is a file, but not a GGUF file: load_model takes a model "
                     "directory (config.json + weights), a .gguf file, or a hub id")
  if name.count("/") == 1 and not path.exists() and not name.lower().endswith(".gguf"):
    try:
      import huggingface_hub
      return Source(name, Path(huggingface_hub.snapshot_download(name, local_files_only=True)))
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
      cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
      raise FileNotFoundError(
          f"{name!r} is neither a local directory nor in the Hugging Face cache "
          f"({cache}; offline): {type(e).__name__}") from None
  what = "GGUF file" if name.lower().endswith(".gguf") else "model directory"
  raise FileNotFoundError(f"{what} {name!r} does not exist")


def resolve_dir(name_or_dir: str | os.PathLike) -> Path:
  """The directory of ``resolve(name_or_dir)`` (kept for callers of the old name)."""
  return resolve(name_or_dir).model_dir


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------


def _config_from_dir(model_dir: Path):
  import transformers
  config_path = model_dir / "config.json"
  if not config_path.exists():
    weights = [f for f in checkpoint.WEIGHT_FILES if (model_dir / f).exists()]
    weights += sorted(p.name for p in model_dir.glob("*.gguf"))
    if weights:
      raise FileNotFoundError(
          f"{config_path} is missing: {model_dir} holds weights ({', '.join(weights)}) "
          "but no config.json to say what model they are (for a GGUF file, pass the "
          ".gguf path itself)")
    raise FileNotFoundError(f"{config_path} is missing")
  raw = checkpoint.read_json(config_path, "the model config")
  if not isinstance(raw, dict):
    raise ValueError(f"{config_path} is not a JSON object")
  registry.family(raw.get("model_type"), str(config_path))  # unknown model_type
  try:
    return transformers.AutoConfig.from_pretrained(str(model_dir))
  except Exception as e:
    raise ValueError(f"{config_path}: transformers cannot read this config "
                     f"({type(e).__name__}: {e})") from None


def _config_from_gguf(gguf_path: Path):
  """(transformers config, config dict, header) of a GGUF file; the architecture is
  checked before the metadata is parsed (or transformers imported)."""
  gguf_io.check_architecture(gguf_path)
  import transformers
  header = gguf_io.read_header(gguf_path)
  config = gguf_io.hf_config_dict(header)
  model_type = config.get("model_type")  # as transformers reads it (llama -> mistral)
  fam = registry.family(model_type, f"{gguf_path} (GGUF metadata)")
  hook = getattr(fam.module, "gguf_config", None)
  if hook is not None:
    config = hook(config, header.metadata, gguf_path)
  cfg = dict(config)
  cfg.pop("model_type")
  try:
    hf_config = transformers.AutoConfig.for_model(model_type, **cfg)
  except Exception as e:
    raise ValueError(f"{gguf_path}: its GGUF metadata makes no valid {model_type} config "
                     f"({type(e).__name__}: {e})") from None
  return hf_config, config, header


# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------


# The tokenizer class transformers' AutoTokenizer picks for a GGUF file of each
# model_type (tests/test_load_gguf_small.py checks they build the same tokenizer).
# Naming it directly skips AutoTokenizer's full metadata parse of the file, which
# it runs only to find this class (7 s for SmolLM2, 21 s for Qwen2.5-0.5B).
GGUF_TOKENIZER_CLASSES = {"llama": "TokenizersBackend", "qwen2": "Qwen2Tokenizer",
                          "gemma2": "GemmaTokenizer", "gemma3_text": "GemmaTokenizer"}


def load_tokenizer(model_dir: Path, gguf_file: str | None = None,
                   model_type: str | None = None):
  """The transformers fast tokenizer stored with the model, or None if there is none.

  Args:
    model_dir: the checkpoint directory (or the GGUF file's).
    gguf_file: a GGUF file in it whose own tokenizer to build.
    model_type: the GGUF file's model_type (picks the tokenizer class directly).

  Raises:
    ValueError: naming the tokenizer files when they cannot be loaded.
  """
  if gguf_file is None and not any((model_dir / f).exists() for f in TOKENIZER_FILES):
    return None
  import transformers
  try:
    if gguf_file is not None and model_type in GGUF_TOKENIZER_CLASSES:
      from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
      cls = tokenizer_class_from_name(GGUF_TOKENIZER_CLASSES[model_type])
      return cls.from_pretrained(str(model_dir), gguf_file=gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return transformers.AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, **kwargs)
  except Exception as e:
    files = gguf_file or ", ".join(f for f in TOKENIZER_FILES if (model_dir / f).exists())
    raise ValueError(f"{model_dir}: cannot load the tokenizer ({files}): "
                     f"{type(e).__name__}: {str(e)[:300]}") from None


def _tokenizer_files(src: Source) -> str:
  if src.gguf is not None:
    return f"{src.gguf} (tokenizer.ggml.tokens)"
  return ", ".join(str(src.model_dir / f) for f in TOKENIZER_FILES
                   if (src.model_dir / f).exists())


def check_tokenizer(tokenizer, vocab_size: int, src: Source) -> None:
  """Refuses a tokenizer that yields ids the model's embedding does not have.

  A tokenizer smaller than the vocabulary is normal (embeddings padded to a multiple
  of 64 or 128); a larger one would index past the embedding.

  Raises:
    ValueError: naming the tokenizer files, their size and the model's vocabulary.
  """
  if tokenizer is None:
    return
  n = len(tokenizer)
  if n > vocab_size:
    where = src.gguf or src.model_dir / "config.json"
    raise ValueError(
        f"the tokenizer ({_tokenizer_files(src)}) has {n} tokens but the model's "
        f"vocabulary ({where}) has {vocab_size}: ids {vocab_size}..{n - 1} would index "
        "past the embedding; the tokenizer belongs to another model")


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def abstract_params(module):
  """The parameter shapes of ``module`` (``jax.eval_shape``: no memory, no compute).

  Text families take a [1, 2] token batch; a config with ``abstract_input()``
  (the vision families) names its own input shape.
  """
  make_input = getattr(module.config, "abstract_input", None)
  x = make_input() if make_input is not None else jax.ShapeDtypeStruct((1, 2), jnp.int32)
  return jax.eval_shape(lambda t: module.init(jax.random.PRNGKey(0), t), x)["params"]


def _unflatten(flat: dict[str, jax.Array]) -> dict:
  tree: dict = {}
  for path, leaf in flat.items():
    node = tree
    *parents, last = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = leaf
  return tree


@dataclasses.dataclass
class _Plan:
  """Everything known about a model before its weights are read."""
  src: Source
  family: registry.Family
  hf_config: Any
  config: Any
  tokenizer: Any
  files: list[Path]
  gguf_header: Any = None
  gguf_config: dict | None = None


def _plan(name_or_dir, dtype, gguf_file) -> _Plan:
  """Resolves, reads the config, checks the weight files and the tokenizer."""
  src = resolve(name_or_dir, gguf_file)
  if src.gguf is not None:
    hf_config, cfg_dict, header = _config_from_gguf(src.gguf)
    fam = registry.family(hf_config.model_type, str(src.gguf))
    files = [src.gguf]
  else:
    hf_config, cfg_dict, header = _config_from_dir(src.model_dir), None, None
    fam = registry.family(hf_config.model_type, str(src.model_dir))
    files = checkpoint.checkpoint_files(src.model_dir)
    checkpoint.validate(files)
  config = fam.config_from_hf(hf_config, dtype=jnp.dtype(dtype).name)
  if header is not None:
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    embed = {t.name: t.shape for t in header.tensors}.get("token_embd.weight")
    rows = embed[0] if embed else config.vocab_size
    if isinstance(tokens, gguf_io.StringArray) and tokens.count > rows:
      raise ValueError(f"{src.gguf}: tokenizer.ggml.tokens has {tokens.count} tokens but "
                       f"the embedding token_embd.weight has {rows} rows: the tokenizer "
                       "does not belong to these weights")
    has_tok = "tokenizer.ggml.model" in header.metadata
    tokenizer = (load_tokenizer(src.model_dir, src.gguf.name, hf_config.model_type)
                 if has_tok else None)
  elif fam.modality == "vision":
    tokenizer = None                  # pixels in: no tokenizer, no vocabulary
  else:
    tokenizer = load_tokenizer(src.model_dir)
  if tokenizer is not None:
    check_tokenizer(tokenizer, config.vocab_size, src)
  return _Plan(src, fam, hf_config, config, tokenizer, files, header, cfg_dict)


def check_model(name_or_dir: str | os.PathLike, dtype=jnp.float32,
                gguf_file: str | os.PathLike | None = None):
  """Checks a model can be loaded, without reading its weights.

  Resolves the name, reads and checks the config (or the GGUF metadata), every
  weight file's header against its size and the tokenizer against the vocabulary:
  every error ``load_model`` raises before it converts a tensor. Cheap, so a binary
  can check all its ``--models`` before it writes anything.

  Returns:
    The family config (e.g. ``gemma.Gemma2Config``).
  """
  return _plan(name_or_dir, dtype, gguf_file).config


def load_model(name_or_dir: str | os.PathLike, dtype=jnp.float32, mesh=None,
               gguf_file: str | os.PathLike | None = None) -> base.Model:
  """Loads a Hugging Face checkpoint or a GGUF file into its Flax port.

  Args:
    name_or_dir: a local directory, a ``.gguf`` file, or a hub id present in the
      local cache.
    dtype: parameter and computation dtype (``jnp.float32`` or ``jnp.bfloat16``).
    mesh: optional ``jax.sharding.Mesh`` with a ``model`` axis: parameters are
      placed tensor-parallel (``partition.py``); None = one device.
    gguf_file: a GGUF file (absolute, or relative to the directory) to read instead
      of safetensors (the same as passing the file itself).

  Returns:
    ``base.Model`` with the tokenizer found in the directory (or GGUF), else None;
    for the vision families a ``vision.VisionModel`` with the image normalisation
    of ``preprocessor_config.json`` (or the family's default).

  Raises:
    FileNotFoundError: missing directory, file, config or weight files.
    ValueError: unknown model_type or GGUF architecture, unsupported config field,
      invalid JSON, a truncated or corrupt weight file, a tokenizer larger than the
      vocabulary, a tensor without a rule, a shape mismatch, or parameters the
      checkpoint does not provide; each names the file (and the tensor or field).
  """
  dtype = jnp.dtype(dtype)
  plan = _plan(name_or_dir, dtype, gguf_file)
  fam, config, src = plan.family, plan.config, plan.src
  module = fam.build(config)
  shapes = partition.flat_paths(abstract_params(module))
  if mesh is not None:
    shardings = partition.param_shardings(fam.name, _unflatten(shapes), mesh, config)
  else:
    shardings = {p: jax.sharding.SingleDeviceSharding(jax.devices()[0]) for p in shapes}

  if plan.gguf_header is not None:
    tensors = ((name, array, src.gguf) for name, array in gguf_io.iter_hf_tensors(
        plan.gguf_header, plan.gguf_config, plan.hf_config, fam.hf_auto_class))
  else:
    tensors = checkpoint.iter_checkpoint(plan.files)
  placed: dict[str, jax.Array] = {}
  where = "the GGUF metadata" if src.gguf is not None else "config.json"
  for name, array, source in tensors:
    try:
      converted = fam.convert(config, name, array)
    except KeyError as e:
      raise ValueError(f"{source}: {e.args[0]} (family {fam.name})") from None
    for path, value in converted.items():
      if path not in shapes:
        raise ValueError(f"{source}: tensor {name!r} maps to {path!r}, which the "
                         f"{fam.name} port does not have")
      if path in placed:
        raise ValueError(f"{source}: tensor {name!r} sets {path!r} a second time")
      if tuple(value.shape) != tuple(shapes[path].shape):
        raise ValueError(
            f"{source}: tensor {name!r} has shape {tuple(array.shape)} -> {path!r} "
            f"{tuple(value.shape)}, but {where} implies {tuple(shapes[path].shape)}")
      placed[path] = jax.device_put(np.asarray(value, dtype), shardings[path])
    del array, converted
  missing = sorted(set(shapes) - set(placed))
  if missing:
    raise ValueError(f"{src.gguf or src.model_dir}: the checkpoint lacks {len(missing)} "
                     f"parameters of the {fam.name} port, e.g. {missing[:5]}")
  if fam.modality == "vision":
    from rosetta_jax.models import vision
    mean, std, size = vision.image_processor_stats(
        src.model_dir, fam.module.IMAGE_MEAN, fam.module.IMAGE_STD, (config.image_size,) * 2)
    return vision.VisionModel(name=str(name_or_dir), module=module,
                              params=_unflatten(placed), config=config, image_mean=mean,
                              image_std=std, image_size=size)
  return base.Model(name=str(name_or_dir), module=module, params=_unflatten(placed),
                    config=config, tokenizer=plan.tokenizer, causal=fam.causal)
