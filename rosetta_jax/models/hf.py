"""Loads Hugging Face checkpoints into the Flax ports, tensor by tensor.

``load_model(name_or_dir)`` reads ``config.json`` and the weights (safetensors, single
or sharded with ``model.safetensors.index.json``; ``pytorch_model.bin``, single or
sharded; or a GGUF file through transformers' GGUF reader) from a local directory or
the Hugging Face cache (offline). Each tensor is read, renamed and transposed by its
family's converter, checked against the shape the config implies, cast, and placed
at once with its sharding; the host never holds more than one converted tensor
beyond the placed parameters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.models import base, partition, registry

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SINGLE = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "tokenizer.model", "vocab.json")


def resolve_dir(name_or_dir: str | os.PathLike) -> Path:
  """A local directory, or the cached snapshot of a hub id (offline).

  Raises:
    FileNotFoundError: naming the path and the cache searched.
  """
  path = Path(name_or_dir).expanduser()
  if path.is_dir():
    return path
  name = str(name_or_dir)
  if name.count("/") == 1 and not path.exists():
    try:
      import huggingface_hub
      return Path(huggingface_hub.snapshot_download(name, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
      cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
      raise FileNotFoundError(
          f"{name!r} is neither a local directory nor in the Hugging Face cache "
          f"({cache}; offline): {type(e).__name__}") from None
  raise FileNotFoundError(f"model directory {name!r} does not exist")


def checkpoint_files(model_dir: Path) -> list[Path]:
  """The weight files of a checkpoint directory, in load order.

  Raises:
    FileNotFoundError: naming the directory, the files looked for, and any shard
      an index lists that is absent.
  """
  for index_name in (SAFETENSORS_INDEX, TORCH_INDEX):
    index = model_dir / index_name
    if index.exists():
      weight_map = json.loads(index.read_text())["weight_map"]
      files = [model_dir / f for f in dict.fromkeys(weight_map.values())]
      for f in files:
        if not f.exists():
          raise FileNotFoundError(f"{index} lists shard {f.name}, which is missing")
      return files
  for single in (SAFETENSORS_SINGLE, TORCH_SINGLE):
    if (model_dir / single).exists():
      return [model_dir / single]
  raise FileNotFoundError(
      f"no weights in {model_dir}: looked for {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, "
      f"{TORCH_SINGLE}, {TORCH_INDEX} (or pass gguf_file=)")


def _to_numpy(tensor) -> np.ndarray:
  """A torch tensor as a float32 (or integer) numpy array; one tensor at a time."""
  import torch
  if tensor.is_floating_point():
    return tensor.detach().to(torch.float32).numpy()
  return tensor.detach().numpy()


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


def iter_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) from a safetensors file, reading one tensor at a time.

  Plain positioned reads rather than a memory map: a mapped file's touched pages
  count in the process's RSS until it is closed, which for a single-file checkpoint
  would be a second full copy; reads leave only the current tensor in memory.
  """
  with open(path, "rb") as fh:
    header_len = int.from_bytes(fh.read(8), "little")
    header = json.loads(fh.read(header_len))
    header.pop("__metadata__", None)
    base = 8 + header_len
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
      try:
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
      except KeyError:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype "
                         f"{info['dtype']}") from None
      start, end = info["data_offsets"]
      fh.seek(base + start)
      array = np.frombuffer(fh.read(end - start), dtype).reshape(info["shape"])
      if np.issubdtype(dtype, np.floating) or dtype == jnp.bfloat16:
        array = array.astype(np.float32)
      yield name, array


def iter_checkpoint(files: list[Path]) -> Iterator[tuple[str, np.ndarray, Path]]:
  """Yields (tensor name, array in Hugging Face layout, file) one tensor at a time.

  safetensors files are read tensor by tensor (``iter_safetensors``); ``.bin``
  files with ``torch.load(mmap=True)``, so neither is read whole into memory.
  """
  import torch
  for f in files:
    if f.suffix == ".safetensors":
      for name, array in iter_safetensors(f):
        yield name, array, f
    else:
      state = torch.load(str(f), map_location="cpu", mmap=True, weights_only=True)
      for name in list(state):
        yield name, _to_numpy(state.pop(name)), f
      del state


def read_gguf_metadata(gguf_path: Path) -> dict:
  """transformers' parse of a GGUF file's metadata: {"config": ..., "tokenizer": ...}."""
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
  return load_gguf_checkpoint(str(gguf_path), return_tensors=False)


def iter_gguf(gguf_path: Path, parsed: dict, hf_config, fam: registry.Family
              ) -> Iterator[tuple[str, np.ndarray, Path]]:
  """Yields (Hugging Face tensor name, dequantised array, file) from a GGUF file.

  Uses transformers' GGUF reader pieces (name map, per-architecture processors such
  as the q/k permutation of llama.cpp), one tensor at a time.

  Args:
    gguf_path: the GGUF file.
    parsed: its metadata (``read_gguf_metadata``).
    hf_config: the transformers config built from it.
    fam: the family, for the auto class whose tensor names the map targets.
  """
  import torch
  import transformers
  from gguf import GGUFReader, dequantize
  from transformers.modeling_gguf_pytorch_utils import (
      TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, read_field)
  parsed = dict(parsed, tensors={})
  reader = GGUFReader(str(gguf_path))
  arch = read_field(reader, "general.architecture")[0]
  processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=parsed["config"])
  with torch.device("meta"):  # names only, no memory
    ref = getattr(transformers, fam.hf_auto_class).from_config(hf_config)
  mapping = get_gguf_hf_weights_map(ref, processor)
  del ref
  for tensor in reader.tensors:
    weights = dequantize(tensor.data, tensor.tensor_type)
    result = processor.process(weights=weights, name=tensor.name,
                               tensor_key_mapping=mapping, parsed_parameters=parsed)
    if result.name not in mapping:
      continue
    yield mapping[result.name], np.asarray(result.weights, np.float32), gguf_path


def load_tokenizer(model_dir: Path, gguf_file: str | None = None):
  """The transformers fast tokenizer stored with the model, or None if there is none."""
  if gguf_file is None and not any((model_dir / f).exists() for f in TOKENIZER_FILES):
    return None
  import transformers
  kwargs = {"gguf_file": gguf_file} if gguf_file else {}
  return transformers.AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, **kwargs)


def _read_hf_config(model_dir: Path, gguf_meta: dict | None):
  import transformers
  if gguf_meta is not None:
    cfg = dict(gguf_meta["config"])
    model_type = cfg.pop("model_type")
    registry.family(model_type, "GGUF metadata")
    return transformers.AutoConfig.for_model(model_type, **cfg)
  config_path = model_dir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{config_path} is missing")
  model_type = json.loads(config_path.read_text()).get("model_type")
  registry.family(model_type, str(config_path))  # unknown model_type: a clear error
  return transformers.AutoConfig.from_pretrained(str(model_dir))


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


def load_model(name_or_dir: str | os.PathLike, dtype=jnp.float32, mesh=None,
               gguf_file: str | os.PathLike | None = None) -> base.Model:
  """Loads a Hugging Face checkpoint into its Flax port.

  Args:
    name_or_dir: a local directory, or a hub id present in the local cache.
    dtype: parameter and computation dtype (``jnp.float32`` or ``jnp.bfloat16``).
    mesh: optional ``jax.sharding.Mesh`` with a ``model`` axis: parameters are
      placed tensor-parallel (``partition.py``); None = one device.
    gguf_file: a GGUF file (absolute, or relative to the directory) to read instead
      of safetensors; the directory then needs no config.json.

  Returns:
    ``base.Model`` with the tokenizer found in the directory (or GGUF), else None;
    for the vision families a ``vision.VisionModel`` with the image normalisation
    of ``preprocessor_config.json`` (or the family's default).

  Raises:
    FileNotFoundError: missing directory, config or weight files.
    ValueError: unknown model_type, unsupported config field, a tensor without a
      rule, a shape mismatch, or parameters the checkpoint does not provide.
  """
  dtype = jnp.dtype(dtype)
  if gguf_file is not None:
    gguf_path = Path(gguf_file)
    if gguf_path.is_absolute():
      model_dir = gguf_path.parent
    else:
      model_dir = resolve_dir(name_or_dir)
      gguf_path = model_dir / gguf_path
    if not gguf_path.exists():
      raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    gguf_name, gguf_meta = gguf_path.name, read_gguf_metadata(gguf_path)
  else:
    model_dir, gguf_name, gguf_meta = resolve_dir(name_or_dir), None, None
  hf_config = _read_hf_config(model_dir, gguf_meta)
  fam = registry.family(hf_config.model_type, str(model_dir))
  config = fam.config_from_hf(hf_config, dtype=dtype.name)
  module = fam.build(config)
  shapes = partition.flat_paths(abstract_params(module))
  if mesh is not None:
    shardings = partition.param_shardings(fam.name, _unflatten(shapes), mesh, config)
  else:
    shardings = {p: jax.sharding.SingleDeviceSharding(jax.devices()[0]) for p in shapes}

  if gguf_name is not None:
    tensors = iter_gguf(gguf_path, gguf_meta, hf_config, fam)
  else:
    tensors = iter_checkpoint(checkpoint_files(model_dir))
  placed: dict[str, jax.Array] = {}
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
            f"{tuple(value.shape)}, but config.json implies {tuple(shapes[path].shape)}")
      placed[path] = jax.device_put(np.asarray(value, dtype), shardings[path])
    del array, converted
  missing = sorted(set(shapes) - set(placed))
  if missing:
    raise ValueError(f"{model_dir}: the checkpoint lacks {len(missing)} parameters of "
                     f"the {fam.name} port, e.g. {missing[:5]}")
  if fam.modality == "vision":
    from rosetta_jax.models import vision
    mean, std, size = vision.image_processor_stats(
        model_dir, fam.module.IMAGE_MEAN, fam.module.IMAGE_STD, (config.image_size,) * 2)
    return vision.VisionModel(name=str(name_or_dir), module=module,
                              params=_unflatten(placed), config=config, image_mean=mean,
                              image_std=std, image_size=size)
  return base.Model(name=str(name_or_dir), module=module, params=_unflatten(placed),
                    config=config, tokenizer=load_tokenizer(model_dir, gguf_name),
                    causal=fam.causal)
