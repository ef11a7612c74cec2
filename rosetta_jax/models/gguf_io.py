"""GGUF files (llama.cpp's format): a header reader, the config, and the tensors.

The header (magic, version, metadata, tensor table) is parsed here with ``struct``
over a memory map: the architecture is read first and an unsupported file is
refused before anything else (``read_architecture`` stops at
``general.architecture``); string arrays (a vocabulary of 256k tokens) are walked
but not decoded unless asked for. Every bound is checked against the file's size,
so a truncated or corrupt file is an error naming the file and the field or tensor
instead of a ``struct.error`` or a short read.

The Hugging Face config is rebuilt from the metadata with transformers' own GGUF
key table (``transformers.integrations.ggml.GGUF_CONFIG_MAPPING``), as its GGUF
reader does, and each family may add what llama.cpp reads from the file but that
table leaves out (``gguf_config`` in the family module, e.g. Gemma's soft-caps).
Tensors are read one at a time with positioned reads and dequantised with the
``gguf`` package; transformers' name map and per-architecture processors (the q/k
permutation of llama, Gemma's ``norm - 1``) give their Hugging Face names.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# GGUF architecture -> Hugging Face model_type of the port that loads it.
ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}

# Metadata value types: fixed-size scalars (struct format, width); 8 string, 9 array.
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4),
            5: ("<i", 4), 6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8),
            12: ("<d", 8)}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
  """A file that is not a GGUF file, or a truncated or corrupt one (names the file)."""


@dataclasses.dataclass(frozen=True)
class StringArray:
  """A string array left undecoded: only its length (e.g. the vocabulary's)."""
  count: int


@dataclasses.dataclass(frozen=True)
class TensorEntry:
  """One tensor of the table.

  Attributes:
    name: GGUF name (``blk.0.attn_q.weight``).
    shape: dims in torch (row-major) order, i.e. GGUF's reversed.
    ggml_type: ggml type id (0 F32, 1 F16, 30 BF16, blocks for quantised types).
    offset: absolute byte offset in the file.
    nbytes: bytes it occupies.
  """
  name: str
  shape: tuple[int, ...]
  ggml_type: int
  offset: int
  nbytes: int


@dataclasses.dataclass(frozen=True)
class Header:
  """A GGUF file's metadata and tensor table (no tensor data)."""
  path: Path
  version: int
  metadata: dict[str, Any]
  tensors: tuple[TensorEntry, ...]

  @property
  def architecture(self) -> str:
    return self.metadata["general.architecture"]

  @property
  def tensor_names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tensors)


class _Cursor:
  """Bounds-checked little-endian reads over a buffer, naming the file on failure."""

  def __init__(self, buf, path: Path):
    self.buf, self.path, self.size, self.pos = buf, path, len(buf), 0

  def fail(self, what: str) -> GGUFError:
    return GGUFError(f"{self.path}: truncated or corrupt GGUF file: cannot read {what} at "
                     f"byte {self.pos} (the file has {self.size} bytes)")

  def need(self, n: int, what: str) -> None:
    if n < 0 or self.pos + n > self.size:
      raise self.fail(what)

  def scalar(self, fmt: str, width: int, what: str):
    self.need(width, what)
    (v,) = struct.unpack_from(fmt, self.buf, self.pos)
    self.pos += width
    return v

  def string(self, what: str) -> str:
    n = self.scalar("<Q", 8, f"the length of {what}")
    self.need(n, what)
    raw = bytes(self.buf[self.pos:self.pos + n])
    self.pos += n
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError:
      raise GGUFError(f"{self.path}: corrupt GGUF file: {what} at byte {self.pos - n} is "
                      "not UTF-8") from None

  def skip_string(self, what: str) -> None:
    n = self.scalar("<Q", 8, f"the length of {what}")
    self.need(n, what)
    self.pos += n

  def value(self, vtype: int, key: str, decode_strings: bool):
    if vtype in _SCALARS:
      return self.scalar(*_SCALARS[vtype], f"the value of {key!r}")
    if vtype == _STRING:
      return self.string(f"the value of {key!r}")
    if vtype != _ARRAY:
      raise GGUFError(f"{self.path}: corrupt GGUF file: metadata key {key!r} has value "
                      f"type {vtype}, which GGUF does not define")
    etype = self.scalar("<I", 4, f"the element type of {key!r}")
    count = self.scalar("<Q", 8, f"the length of {key!r}")
    if etype in _NUMPY:
      width = _SCALARS[etype][1]
      self.need(count * width, f"the {count} elements of {key!r}")
      out = np.frombuffer(self.buf, _NUMPY[etype], count, self.pos).copy()
      self.pos += count * width
      return out
    if etype == _STRING:
      if count > self.size - self.pos:  # each element takes at least 8 bytes
        raise self.fail(f"the {count} strings of {key!r}")
      if decode_strings:
        return [self.string(f"element {i} of {key!r}") for i in range(count)]
      for i in range(count):
        self.skip_string(f"element {i} of {key!r}")
      return StringArray(count)
    raise GGUFError(f"{self.path}: metadata key {key!r} is an array of type {etype}, "
                    "which this reader does not read")


def _open(path: Path):
  """(file, mmap) of ``path``; a file too short to hold a GGUF header is an error."""
  size = path.stat().st_size
  if size < 24:
    with open(path, "rb") as f:
      head = f.read(4)
    if head != MAGIC:
      raise GGUFError(f"{path} is not a GGUF file: it starts with {head!r}, not {MAGIC!r}")
    raise GGUFError(f"{path}: truncated GGUF file: {size} bytes, shorter than a header")
  f = open(path, "rb")
  return f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _preamble(cur: _Cursor) -> tuple[int, int, int]:
  magic = bytes(cur.buf[:4])
  if magic != MAGIC:
    raise GGUFError(f"{cur.path} is not a GGUF file: it starts with {magic!r}, not {MAGIC!r}")
  cur.pos = 4
  version = cur.scalar("<I", 4, "the version")
  if version not in VERSIONS:
    raise GGUFError(f"{cur.path}: GGUF version {version} is not supported (only "
                    f"{list(VERSIONS)})")
  n_tensors = cur.scalar("<Q", 8, "the tensor count")
  n_kv = cur.scalar("<Q", 8, "the metadata count")
  if n_tensors > cur.size or n_kv > cur.size:
    raise GGUFError(f"{cur.path}: corrupt GGUF header: {n_tensors} tensors and {n_kv} "
                    f"metadata keys in a file of {cur.size} bytes")
  return version, n_tensors, n_kv


def read_architecture(path: str | os.PathLike) -> str:
  """``general.architecture`` of a GGUF file, reading no further than that key.

  Writers put it first, so this touches a few hundred bytes whatever the file's size.

  Raises:
    GGUFError: not a GGUF file, truncated, corrupt, or without the key.
  """
  path = Path(path)
  f, buf = _open(path)
  try:
    cur = _Cursor(buf, path)
    _, _, n_kv = _preamble(cur)
    for _ in range(n_kv):
      key = cur.string("a metadata key")
      vtype = cur.scalar("<I", 4, f"the type of {key!r}")
      value = cur.value(vtype, key, decode_strings=False)
      if key == "general.architecture":
        if not isinstance(value, str):
          raise GGUFError(f"{path}: general.architecture is not a string: {value!r}")
        return value
    raise GGUFError(f"{path}: the GGUF metadata has no general.architecture")
  finally:
    buf.close()
    f.close()


def check_architecture(path: str | os.PathLike) -> str:
  """The Hugging Face model_type of a GGUF file's architecture.

  Raises:
    GGUFError: the file is not a readable GGUF file.
    ValueError: naming the file and its architecture, when no port loads it.
  """
  arch = read_architecture(path)
  if arch not in ARCHITECTURES:
    raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported; supported "
                     f"GGUF architectures: {sorted(ARCHITECTURES)}")
  return ARCHITECTURES[arch]


def _quant_sizes():
  try:
    from gguf import GGML_QUANT_SIZES
  except ImportError:
    raise ImportError("reading GGUF tensors needs the `gguf` package: pip install gguf"
                      ) from None
  return GGML_QUANT_SIZES


def read_header(path: str | os.PathLike, string_arrays: Sequence[str] = ()) -> Header:
  """Parses the metadata and the tensor table, and checks every tensor lies in the file.

  Args:
    path: the GGUF file.
    string_arrays: keys of string arrays to decode (others keep only their length).

  Raises:
    GGUFError: naming the file and the field or tensor that is truncated or corrupt.
  """
  path = Path(path)
  sizes = _quant_sizes()
  f, buf = _open(path)
  try:
    cur = _Cursor(buf, path)
    version, n_tensors, n_kv = _preamble(cur)
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
      key = cur.string("a metadata key")
      vtype = cur.scalar("<I", 4, f"the type of {key!r}")
      metadata[key] = cur.value(vtype, key, decode_strings=key in string_arrays)
    if "general.architecture" not in metadata:
      raise GGUFError(f"{path}: the GGUF metadata has no general.architecture")
    raw = []
    for i in range(n_tensors):
      name = cur.string(f"the name of tensor {i}")
      ndim = cur.scalar("<I", 4, f"the rank of tensor {name!r}")
      if ndim > 8:
        raise GGUFError(f"{path}: corrupt GGUF tensor table: tensor {name!r} has rank {ndim}")
      dims = [cur.scalar("<Q", 8, f"the shape of tensor {name!r}") for _ in range(ndim)]
      ggml_type = cur.scalar("<I", 4, f"the type of tensor {name!r}")
      offset = cur.scalar("<Q", 8, f"the offset of tensor {name!r}")
      raw.append((name, tuple(reversed(dims)), ggml_type, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-cur.pos // alignment) * alignment
    tensors = []
    for name, shape, ggml_type, offset in raw:
      try:
        block, type_size = sizes[ggml_type]
      except KeyError:
        raise GGUFError(f"{path}: tensor {name!r} has ggml type {ggml_type}, which the "
                        "gguf package does not know") from None
      n = math.prod(shape)
      if shape and shape[-1] % block:
        raise GGUFError(f"{path}: tensor {name!r}: row of {shape[-1]} elements is not a "
                        f"multiple of its type's block of {block}")
      nbytes = n // block * type_size
      start = data_start + offset
      if start + nbytes > cur.size:
        raise GGUFError(
            f"{path}: truncated GGUF file: tensor {name!r} {shape} needs bytes "
            f"[{start}, {start + nbytes}) but the file has {cur.size} bytes")
      tensors.append(TensorEntry(name, shape, ggml_type, start, nbytes))
    return Header(path, version, metadata, tuple(tensors))
  finally:
    buf.close()
    f.close()


def read_tensor(fh, entry: TensorEntry, path: Path) -> np.ndarray:
  """One tensor dequantised to float32, torch layout (positioned read, no memory map)."""
  from gguf import GGMLQuantizationType, dequantize
  fh.seek(entry.offset)
  data = fh.read(entry.nbytes)
  if len(data) != entry.nbytes:
    raise GGUFError(f"{path}: short read of tensor {entry.name!r} ({len(data)} of "
                    f"{entry.nbytes} bytes): the file changed or is truncated")
  raw = np.frombuffer(data, np.uint8)
  qtype = GGMLQuantizationType(entry.ggml_type)
  rows = math.prod(entry.shape[:-1]) if len(entry.shape) > 1 else 1
  values = dequantize(raw.reshape(rows, -1), qtype)
  return np.asarray(values, np.float32).reshape(entry.shape)


# ----------------------------------------------------------------------------
# The Hugging Face config, as transformers' GGUF reader builds it
# ----------------------------------------------------------------------------


def hf_config_dict(header: Header) -> dict:
  """The transformers config dict of a GGUF file, key for key as
  ``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint`` derives it for
  the architectures in ``ARCHITECTURES`` (tested against it), without its slow
  parse of the vocabulary. One difference: a file with neither a vocabulary nor a
  ``<arch>.vocab_size`` gets the embedding's row count as ``vocab_size``.
  """
  from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
  meta = header.metadata
  arch = header.architecture
  model_type = arch
  if "llama" in arch and "mistral" in [meta.get("general.name")]:
    model_type = "mistral"
  config: dict[str, Any] = {}
  config["tie_word_embeddings"] = "output.weight" not in header.tensor_names
  for key, value in meta.items():
    key = key.replace(arch, model_type)
    prefix, _, rest = key.partition(".")
    renames = GGUF_CONFIG_MAPPING.get(prefix, {})
    if rest not in renames or renames[rest] in (None, -1):
      continue
    if isinstance(value, np.ndarray):
      value = value.tolist()
      if len(value) == 1:
        value = value[0]
    elif isinstance(value, str) and arch in value:
      value = value.replace(arch, model_type)
    config[renames[rest]] = value
  if config.get("model_type") == "gemma3":
    config["model_type"] = "gemma3_text"
  if "vocab_size" not in config:
    tokens = meta.get("tokenizer.ggml.tokens")
    embed = {t.name: t.shape for t in header.tensors}.get("token_embd.weight")
    if isinstance(tokens, StringArray):
      config["vocab_size"] = tokens.count
    elif embed:
      # No vocabulary in the file: transformers would fall back to the config
      # class's default size (and fail on the embedding); the embedding's rows are
      # the vocabulary.
      config["vocab_size"] = embed[0]
  return config


# ----------------------------------------------------------------------------
# Tensors under their Hugging Face names
# ----------------------------------------------------------------------------


def weights_map(model, processor, arch: str, num_layers: int) -> dict[str, str]:
  """{GGUF tensor name: Hugging Face name} for ``model`` (a transformers module).

  The same walk as ``transformers.modeling_gguf_pytorch_utils.get_gguf_hf_weights_map``
  (every submodule's state dict, names qualified by its path, a parent's entries
  winning), with gguf's name table built once instead of once per submodule (14 s
  of SmolLM2's load).
  """
  from gguf import MODEL_ARCH_NAMES, get_tensor_name_map
  try:
    arch_id = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
  except StopIteration:
    raise ValueError(f"the gguf package does not know architecture {arch!r}") from None
  names = get_tensor_name_map(arch_id, num_layers)

  def walk(module, qual: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for hf_name in module.state_dict():
      hf_name = processor.preprocess_name(hf_name)
      base, suffix = hf_name, ""
      if hf_name.endswith((".weight", ".bias")):
        base, suffix = hf_name.rsplit(".", 1)
        suffix = "." + suffix
      gguf_name = names.get_name(base)
      if gguf_name is None:
        processor.perform_fallback_tensor_mapping(out, suffix, qual, hf_name)
        continue
      out[gguf_name + suffix] = qual + hf_name
    for child_name, child in module.named_children():
      for k, v in walk(child, f"{qual}{child_name}.").items():
        out.setdefault(k, v)
    return out

  return walk(model, "")


def iter_hf_tensors(header: Header, config_dict: dict, hf_config, auto_class: str
                    ) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (Hugging Face tensor name, float32 array) one tensor at a time.

  Args:
    header: the file's header (``read_header``).
    config_dict: its config dict (``hf_config_dict``), for the tensor processors.
    hf_config: the transformers config, to build the reference model's names.
    auto_class: the transformers auto class whose tensor names the map targets.

  Raises:
    GGUFError: a tensor with no Hugging Face name (naming it), or a short read.
  """
  import torch
  import transformers
  from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor
  arch = header.architecture
  processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config_dict)
  with torch.device("meta"):  # names only, no memory
    ref = getattr(transformers, auto_class).from_config(hf_config)
  mapping = weights_map(ref, processor, arch, hf_config.num_hidden_layers)
  del ref
  parsed = {"config": config_dict, "tensors": {}}
  with open(header.path, "rb") as fh:
    for entry in header.tensors:
      weights = read_tensor(fh, entry, header.path)
      result = processor.process(weights=weights, name=entry.name,
                                 tensor_key_mapping=mapping, parsed_parameters=parsed)
      if result.name not in mapping:
        raise GGUFError(f"{header.path}: GGUF tensor {entry.name!r} has no Hugging Face "
                        f"name for architecture {arch!r}; it would be dropped")
      yield mapping[result.name], np.asarray(result.weights, np.float32)
