"""Tensor-parallel PartitionSpecs for every family on a ``("data", "model")`` mesh.

Megatron-style splits, declared as data (regexes over Flax parameter paths):

* column-parallel (attention q/k/v, MLP up and gate): kernel ``[in, out]`` split on
  ``out`` over ``model``, bias split likewise: each device holds whole heads or a
  slice of the neurons;
* row-parallel (attention output, MLP down): kernel split on ``in``; bias
  replicated (XLA inserts the all-reduce);
* embeddings split over the vocabulary; norms and everything else replicated.

Parameters are replicated over ``data``. A dimension that the ``model`` axis does not
divide evenly is replicated instead (JAX places arrays only in equal shards), and so
are the attention projections when the heads (or key/value heads) do not split
evenly, so that a device never holds part of a head. Any model runs on any mesh;
``describe`` reports which parameters fell back.
"""

from __future__ import annotations

import re
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MODEL = "model"
COL = P(None, MODEL)      # kernel [in, out], split out
COL_BIAS = P(MODEL)
ROW = P(MODEL, None)      # kernel [in, out], split in
VOCAB_ROWS = P(MODEL, None)  # embedding [vocab, d]

_COMMON_TAIL = (
    (r".*/(embedding)", VOCAB_ROWS),
    (r".*", P()),
)

# Gemma: the Llama splits (q/k norms act per head on whole heads: replicated).
_GEMMA = (
    (r".*/(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel", COL),
    (r".*/(q_proj|k_proj|v_proj)/bias", COL_BIAS),
    (r".*/(o_proj|down_proj)/kernel", ROW),
    (r"lm_head/kernel", COL),
)

RULES: dict[str, tuple[tuple[str, P], ...]] = {
    "gpt_neox": (
        (r".*/(query_key_value|dense_h_to_4h)/kernel", COL),
        (r".*/(query_key_value|dense_h_to_4h)/bias", COL_BIAS),
        (r".*/attention/dense/kernel", ROW),
        (r".*/dense_4h_to_h/kernel", ROW),
        (r"embed_out/kernel", COL),
    ),
    "opt": (
        (r".*/(q_proj|k_proj|v_proj|fc1)/kernel", COL),
        (r".*/(q_proj|k_proj|v_proj|fc1)/bias", COL_BIAS),
        (r".*/(out_proj|fc2)/kernel", ROW),
        (r"lm_head/kernel", COL),
    ),
    "gpt2": (
        (r".*/(q_proj|k_proj|v_proj|c_fc)/kernel", COL),
        (r".*/(q_proj|k_proj|v_proj|c_fc)/bias", COL_BIAS),
        (r".*/c_proj/kernel", ROW),
    ),
    "qwen2": (
        (r".*/(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel", COL),
        (r".*/(q_proj|k_proj|v_proj)/bias", COL_BIAS),
        (r".*/(o_proj|down_proj)/kernel", ROW),
        (r"lm_head/kernel", COL),
    ),
    "llama": (
        (r".*/(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel", COL),
        (r".*/(q_proj|k_proj|v_proj|gate_proj|up_proj)/bias", COL_BIAS),
        (r".*/(o_proj|down_proj)/kernel", ROW),
        (r"lm_head/kernel", COL),
    ),
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "gemma3": _GEMMA,
    "bert": (
        (r".*/(query|key|value|intermediate)/kernel", COL),
        (r".*/(query|key|value|intermediate)/bias", COL_BIAS),
        (r".*/(attention_output|output)/kernel", ROW),
    ),
}
_VISION_RULES = (
    (r".*/(query|key|value|fc1|gate|up)/kernel", COL),
    (r".*/(query|key|value|fc1|gate|up)/bias", COL_BIAS),
    (r".*/(attention_output|fc2|down)/kernel", ROW),
)
RULES.update({f: _VISION_RULES for f in ("vit", "dinov2", "dinov2_with_registers",
                                         "clip_vision_model", "clip")})


# Parameters whose split must fall on whole heads: (family, regex, config attribute).
HEAD_ALIGNED = (
    (r".*/(query_key_value|q_proj|query|key|value|dense|o_proj|out_proj|attention_output"
     r"|c_proj)/(kernel|bias)", "num_heads"),
    (r".*/(k_proj|v_proj)/(kernel|bias)", "num_kv_heads"),
)
_MLP_NAMES = ("dense_4h_to_h", "mlp/c_proj")


def _heads_split(path: str, config, mesh: Mesh) -> bool:
  """False when ``path`` is an attention projection whose heads the mesh cannot split."""
  if config is None or any(n in path for n in _MLP_NAMES):
    return True
  for pattern, attr in HEAD_ALIGNED:
    if re.fullmatch(pattern, path):
      heads = getattr(config, attr, None) or getattr(config, "num_heads")
      return heads % mesh.shape[MODEL] == 0
  return True


def spec_for(family: str, path: str) -> P:
  """The PartitionSpec of the parameter at ``path`` ("layers_0/mlp/fc1/kernel")."""
  try:
    rules = RULES[family] + _COMMON_TAIL
  except KeyError:
    raise ValueError(f"no partition rules for family {family!r}; have {sorted(RULES)}") from None
  for pattern, spec in rules:
    if re.fullmatch(pattern, path):
      return spec
  return P()


def fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """``spec`` with every dimension the mesh does not divide evenly replicated."""
  entries = list(spec) + [None] * (len(shape) - len(spec))
  out = []
  for dim, axis in zip(shape, entries):
    size = mesh.shape[axis] if axis is not None else 1
    out.append(axis if axis is not None and dim % size == 0 else None)
  return P(*out)


def flat_paths(tree) -> dict[str, Any]:
  """{"a/b/c": leaf} for a nested dict pytree."""
  out = {}
  for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out["/".join(str(getattr(k, "key", k)) for k in keys)] = leaf
  return out


def param_spec(family: str, path: str, shape, mesh: Mesh, config=None) -> P:
  """The spec actually used on ``mesh``: the rule's, minus what cannot split evenly."""
  if not _heads_split(path, config, mesh):
    return P()
  return fit_spec(spec_for(family, path), tuple(shape), mesh)


def param_shardings(family: str, abstract_params, mesh: Mesh,
                    config=None) -> dict[str, NamedSharding]:
  """{path: NamedSharding} for every parameter of ``abstract_params`` on ``mesh``.

  Args:
    family: family name (``registry.FAMILIES`` key).
    abstract_params: the parameter pytree, arrays or ``jax.ShapeDtypeStruct``.
    mesh: a mesh with a ``model`` axis (any other axes replicate the parameters).
    config: the family config (``num_heads``, ``num_kv_heads``), to keep heads whole.
  """
  if MODEL not in mesh.axis_names:
    raise ValueError(f"mesh axes {mesh.axis_names} have no {MODEL!r} axis")
  return {path: NamedSharding(mesh, param_spec(family, path, leaf.shape, mesh, config))
          for path, leaf in flat_paths(abstract_params).items()}


def describe(family: str, abstract_params, mesh: Mesh, config=None) -> dict[str, list[str]]:
  """Which parameters are split and which fell back to replication on ``mesh``."""
  out = {"split": [], "fell_back": [], "replicated": []}
  for path, leaf in flat_paths(abstract_params).items():
    want = spec_for(family, path)
    got = param_spec(family, path, leaf.shape, mesh, config)
    key = ("split" if got == want else "fell_back") if any(want) else "replicated"
    out[key].append(path)
  return out
