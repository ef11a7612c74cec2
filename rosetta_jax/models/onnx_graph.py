"""Small readers of ONNX graphs shared by the ONNX converters (``offline.onnx_to_bert``,
``onnx_dinov2.onnx_to_dinov2``)."""

from __future__ import annotations


def onnx_attr(node, name, default=None):
  for a in node.attribute:
    if a.name == name:
      import onnx
      return onnx.helper.get_attribute_value(a)
  return default


def onnx_heads(graph, inits, hidden: int) -> int:
  """The head count: the constant Reshape target [b, s, heads, head_dim] of attention."""
  from onnx import numpy_helper
  consts = {}
  for n in graph.node:
    if n.op_type == "Constant":
      v = onnx_attr(n, "value")
      if v is not None:
        consts[n.output[0]] = numpy_helper.to_array(v)
  for t in inits.values():
    consts.setdefault(t.name, None)
  heads = set()
  for n in graph.node:
    if n.op_type == "Concat":
      vals = [consts.get(i) for i in n.input]
      if len(vals) == 4 and all(v is not None and v.size == 1 for v in vals[2:]):
        h, d = int(vals[2].reshape(())), int(vals[3].reshape(()))
        if h * d == hidden:
          heads.add(h)
  if len(heads) != 1:
    raise ValueError(f"cannot read the attention head count from the graph (found {heads})")
  return heads.pop()
