"""Reading Hugging Face checkpoint files, and refusing damaged ones by name.

``checkpoint_files`` lists a directory's weight files; ``validate`` checks them all
(safetensors headers against the file sizes, each tensor's byte range against its
shape and dtype; ``.bin`` files opened) before a single tensor is converted, so a
truncated or corrupt file is an error that names the file and the tensor, raised
before anything is placed or written. ``iter_checkpoint`` then yields the tensors
one at a time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import jax.numpy as jnp
import numpy as np

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SINGLE = "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS_SINGLE, SAFETENSORS_INDEX, TORCH_SINGLE, TORCH_INDEX)

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
# A safetensors header is JSON of at most this size (the format's own limit).
_MAX_HEADER = 100 * 1024 * 1024


def read_json(path: Path, what: str = "") -> Any:
  """``json.loads`` of a file; invalid JSON is an error naming the file and position.

  Raises:
    ValueError: ``<path> is not valid JSON (<reason> at line l column c)``.
  """
  try:
    text = Path(path).read_bytes().decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: byte {e.start} is not UTF-8"
                     f"{' (' + what + ')' if what else ''}") from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column "
                     f"{e.colno}){' (' + what + ')' if what else ''}") from None


def checkpoint_files(model_dir: Path) -> list[Path]:
  """The weight files of a checkpoint directory, in load order.

  Raises:
    FileNotFoundError: naming the directory, the files looked for, and any shard
      an index lists that is absent.
    ValueError: an index that is not valid JSON or has no ``weight_map``.
  """
  for index_name in (SAFETENSORS_INDEX, TORCH_INDEX):
    index = model_dir / index_name
    if index.exists():
      data = read_json(index, "a shard index")
      if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise ValueError(f"{index} has no 'weight_map' object: not a shard index")
      files = [model_dir / f for f in dict.fromkeys(data["weight_map"].values())]
      for f in files:
        if not f.exists():
          raise FileNotFoundError(f"{index} lists shard {f.name}, which is missing")
      return files
  for single in (SAFETENSORS_SINGLE, TORCH_SINGLE):
    if (model_dir / single).exists():
      return [model_dir / single]
  raise FileNotFoundError(
      f"no weights in {model_dir}: looked for {', '.join(WEIGHT_FILES)} "
      "(or pass a .gguf file)")


# ----------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------


def safetensors_header(path: Path) -> tuple[dict, int]:
  """(validated header {name: info}, byte offset of the data) of a safetensors file.

  Checks the header length against the file, the JSON, each tensor's dtype, shape
  and byte range (its size matches shape x dtype, and lies inside the file).

  Raises:
    ValueError: naming the file (and the tensor) that is truncated or corrupt.
  """
  size = path.stat().st_size
  with open(path, "rb") as fh:
    head = fh.read(8)
    if len(head) < 8:
      raise ValueError(f"{path}: truncated safetensors file ({size} bytes, too short "
                       "for a header)")
    header_len = int.from_bytes(head, "little")
    if header_len > min(size - 8, _MAX_HEADER):
      raise ValueError(f"{path}: truncated or corrupt safetensors file: its header "
                       f"claims {header_len} bytes but the file has {size} bytes")
    raw = fh.read(header_len)
  try:
    header = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: corrupt safetensors file: its {header_len}-byte header is "
                     f"not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise ValueError(f"{path}: corrupt safetensors file: the header is not a JSON object")
  header.pop("__metadata__", None)
  data_start, data_len = 8 + header_len, size - 8 - header_len
  for name, info in header.items():
    try:
      dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
      shape = [int(d) for d in info["shape"]]
      start, end = (int(x) for x in info["data_offsets"])
    except KeyError as e:
      if isinstance(info, dict) and "dtype" in info and e.args[0] == info["dtype"]:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype "
                         f"{info['dtype']}") from None
      raise ValueError(f"{path}: corrupt safetensors header: tensor {name!r} lacks "
                       f"{e.args[0]!r}") from None
    except (TypeError, ValueError):
      raise ValueError(f"{path}: corrupt safetensors header entry for tensor {name!r}: "
                       f"{info!r}") from None
    want = math.prod(shape) * dtype.itemsize
    if end - start != want or start < 0:
      raise ValueError(f"{path}: corrupt safetensors header: tensor {name!r} {shape} "
                       f"{info['dtype']} needs {want} bytes but spans [{start}, {end})")
    if end > data_len:
      raise ValueError(
          f"{path}: truncated safetensors file: tensor {name!r} {shape} ends at data "
          f"byte {end} but the file holds {data_len} bytes of data ({size} in all)")
  return header, data_start


def iter_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) from a safetensors file, reading one tensor at a time.

  Plain positioned reads rather than a memory map: a mapped file's touched pages
  count in the process's RSS until it is closed, which for a single-file checkpoint
  would be a second full copy; reads leave only the current tensor in memory.
  """
  header, base = safetensors_header(path)
  with open(path, "rb") as fh:
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
      dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
      start, end = info["data_offsets"]
      fh.seek(base + start)
      data = fh.read(end - start)
      if len(data) != end - start:
        raise ValueError(f"{path}: short read of tensor {name!r}: the file changed or "
                         "is truncated")
      array = np.frombuffer(data, dtype).reshape(info["shape"])
      if np.issubdtype(dtype, np.floating) or dtype == jnp.bfloat16:
        array = array.astype(np.float32)
      yield name, array


# ----------------------------------------------------------------------------
# PyTorch .bin
# ----------------------------------------------------------------------------


def _torch_load(path: Path):
  import torch
  try:
    return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
  except Exception as e:  # RuntimeError (zip), UnpicklingError, EOFError, ...
    raise ValueError(f"{path}: cannot read this PyTorch checkpoint, it is truncated or "
                     f"corrupt ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def _to_numpy(tensor) -> np.ndarray:
  """A torch tensor as a float32 (or integer) numpy array; one tensor at a time."""
  import torch
  if tensor.is_floating_point():
    return tensor.detach().to(torch.float32).numpy()
  return tensor.detach().numpy()


# ----------------------------------------------------------------------------
# Whole checkpoints
# ----------------------------------------------------------------------------


def validate(files: list[Path]) -> None:
  """Checks every weight file is readable and whole, before any tensor is converted.

  Raises:
    ValueError: naming the damaged file (and tensor).
  """
  for f in files:
    if f.suffix == ".safetensors":
      safetensors_header(f)
    else:
      state = _torch_load(f)
      if not isinstance(state, dict):
        raise ValueError(f"{f}: not a state dict (a {type(state).__name__})")
      del state


def iter_checkpoint(files: list[Path]) -> Iterator[tuple[str, np.ndarray, Path]]:
  """Yields (tensor name, array in Hugging Face layout, file) one tensor at a time.

  safetensors files are read tensor by tensor (``iter_safetensors``); ``.bin``
  files with ``torch.load(mmap=True)``, so neither is read whole into memory.
  """
  for f in files:
    if f.suffix == ".safetensors":
      for name, array in iter_safetensors(f):
        yield name, array, f
    else:
      state = _torch_load(f)
      for name in list(state):
        try:
          array = _to_numpy(state.pop(name))
        except Exception as e:
          raise ValueError(f"{f}: cannot read tensor {name!r} ({type(e).__name__}: {e}); "
                           "the file is truncated or corrupt") from None
        yield name, array, f
      del state
