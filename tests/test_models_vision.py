"""Vision ports (ViT, DINOv2 with and without registers, CLIP vision) vs Hugging Face.

Tiny random configs, float32. Every test runs the native grid and an odd,
non-square one whose image leaves pixels past the last whole patch (dropped by
both, as the strided convolution does), so the position embeddings are
interpolated. Compared: the last hidden states (all tokens), every
``layer_{i}/mlp`` site over the patch tokens, the class/register rows apart, and
the residual stream; all within 1e-4.
"""

import jax
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import Mesh, PartitionSpec as P

from load_helpers import TOL, randomize
from rosetta_jax.models import clip_vision, dinov2, load_model, vision, vit

SIZES = [(24, 24), (31, 20)]  # native 4x4 grid; 5x3 grid with 1 row and 2 columns left over


def _random(model, seed):
  """``randomize`` with DINOv2's layer scales around 1 (as trained ones are)."""
  model = randomize(model, seed=seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("lambda1"):
        p.add_(1.0)
  return model


def _vit(**kw):
  cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             image_size=24, patch_size=6, num_channels=3)
  cfg.update(kw)
  return _random(transformers.ViTModel(transformers.ViTConfig(**cfg)), seed=1)


def _dinov2(registers=0, swiglu=False, heads=4):
  kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=heads, mlp_ratio=2,
            image_size=24, patch_size=6, num_channels=3, use_swiglu_ffn=swiglu)
  if registers:
    m = transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
  else:
    m = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
  return _random(m, seed=2)


def _clip(**kw):
  cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
             image_size=24, patch_size=6, num_channels=3)
  cfg.update(kw)
  return _random(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**cfg)), seed=3)


def _layers(hf):
  if isinstance(hf, transformers.ViTModel):
    return hf.layers
  if isinstance(hf, transformers.CLIPVisionModel):
    return hf.encoder.layers
  return hf.encoder.layer


def _downs(hf):
  return [getattr(l.mlp, "fc2", None) or l.mlp.down_proj for l in _layers(hf)]


def hf_run(hf, pixels_nchw):
  """(last hidden [b, S, d], [neurons [b, S, n] per layer], [resid per layer])."""
  captured = []
  hooks = [m.register_forward_pre_hook(lambda _, a: captured.append(a[0].detach().numpy()))
           for m in _downs(hf)]
  kw = {} if isinstance(hf, (transformers.Dinov2Model, transformers.Dinov2WithRegistersModel)) \
      else {"interpolate_pos_encoding": True}
  try:
    with torch.no_grad():
      out = hf(pixel_values=torch.as_tensor(pixels_nchw), output_hidden_states=True, **kw)
  finally:
    for h in hooks:
      h.remove()
  resid = [h.detach().numpy() for h in out.hidden_states[1:]]
  return out.last_hidden_state.detach().numpy(), captured, resid


def assert_vision_parity(ours, hf, size, seed=0, batch=2):
  """Our port matches ``hf`` on random pixels of ``size``: hidden, sites, prefix rows."""
  rng = np.random.default_rng(seed)
  h, w = size
  nchw = rng.normal(size=(batch, ours.config.num_channels, h, w)).astype(np.float32)
  ref_hidden, ref_neurons, ref_resid = hf_run(hf, nchw)
  sites = ours.mlp_sites() + [f"layer_{i}/resid" for i in range(ours.num_layers)]
  hidden, patches, prefix = ours(nchw.transpose(0, 2, 3, 1), sites=sites)
  gh, gw = ours.grid(h, w)
  k = ours.num_prefix_tokens
  assert hidden.shape == ref_hidden.shape == (batch, k + gh * gw, ours.config.hidden_size)
  diffs = {"hidden": float(np.abs(np.asarray(hidden) - ref_hidden).max())}
  for i in range(ours.num_layers):
    for kind, ref in (("mlp", ref_neurons[i]), ("resid", ref_resid[i])):
      site = f"layer_{i}/{kind}"
      assert patches[site].shape == (batch, gh * gw, ref.shape[-1])
      assert prefix[site].shape == (batch, k, ref.shape[-1])
      diffs[site] = float(np.abs(np.asarray(patches[site]) - ref[:, k:]).max())
      diffs[site + ":prefix"] = float(np.abs(np.asarray(prefix[site]) - ref[:, :k]).max())
  bad = {s: d for s, d in diffs.items() if not d <= TOL}
  assert not bad, f"parity beyond {TOL} at {size}: {bad}"
  assert np.abs(ref_hidden).max() > 1e-1 and np.abs(ref_neurons[-1]).max() > 1e-2
  return diffs


@pytest.mark.parametrize("make,cls", [
    (_vit, vit.ViTConfig), (_dinov2, dinov2.Dinov2Config), (_clip, clip_vision.CLIPVisionConfig)])
def test_parity(tmp_path, make, cls):
  hf = make()
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert isinstance(ours, vision.VisionModel) and isinstance(ours.config, cls)
  assert not ours.causal and ours.tokenizer is None
  for size in SIZES:
    assert_vision_parity(ours, hf, size)


def test_dinov2_registers_and_swiglu(tmp_path):
  # Registers (antialiased position interpolation) and the SwiGLU MLP, together.
  hf = _dinov2(registers=3, swiglu=True)
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert ours.num_prefix_tokens == 4 and ours.config.swiglu
  assert ours.neurons_per_layer == hf.encoder.layer[0].mlp.down_proj.in_features
  for size in SIZES + [(13, 40)]:  # and a grid wider than the learned one (2 x 6 > 4)
    assert_vision_parity(ours, hf, size, seed=5)


def test_full_clip_checkpoint_loads_the_vision_tower(tmp_path):
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=99, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=24),
      vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=40, image_size=24, patch_size=6),
      projection_dim=8)
  full = _random(transformers.CLIPModel(cfg), seed=6)
  full.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  assert isinstance(ours.config, clip_vision.CLIPVisionConfig) and ours.num_layers == 2
  tower = transformers.CLIPVisionModel(full.config.vision_config).eval()
  tower.load_state_dict(full.vision_model.state_dict())
  assert_vision_parity(ours, tower, (31, 20))


def test_parity_on_a_mesh(tmp_path):
  # 3 heads on a 2-wide model axis: attention replicated; the 72 neurons split.
  hf = _random(transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
      hidden_size=36, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=2, image_size=24,
      patch_size=6, num_register_tokens=1)), seed=7)
  hf.save_pretrained(tmp_path)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  ours = load_model(tmp_path, mesh=mesh)
  layer = ours.params["layers_0"]
  assert layer["fc1"]["kernel"].sharding.spec == P(None, "model")
  assert layer["fc2"]["kernel"].sharding.spec == P("model", None)
  assert layer["query"]["kernel"].sharding.spec == P()
  assert_vision_parity(ours, hf, (31, 20), seed=8)


def test_bicubic_weights_match_torch():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 7, 7)).astype(np.float32)
  for out in [(7, 7), (5, 3), (11, 16), (2, 9), (1, 1)]:
    for aa in (False, True):
      ref = torch.nn.functional.interpolate(torch.as_tensor(x), size=out, mode="bicubic",
                                            align_corners=False, antialias=aa).numpy()
      mh, mw = vision.bicubic_matrix(7, out[0], aa), vision.bicubic_matrix(7, out[1], aa)
      got = np.einsum("hi,wj,bcij->bchw", mh, mw, x.astype(np.float64))
      assert np.abs(got - ref).max() < 1e-5, (out, aa, np.abs(got - ref).max())


def test_errors_name_the_field_and_tensor(tmp_path):
  with pytest.raises(ValueError, match="image_size.*not square"):
    vit.ViTConfig.from_hf(transformers.ViTConfig(image_size=[24, 30], patch_size=6))
  cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
  cfg.drop_path_rate = 0.1  # training only: accepted
  dinov2.Dinov2Config.from_hf(cfg)
  cfg.some_new_switch = True
  with pytest.raises(ValueError, match="some_new_switch"):
    dinov2.Dinov2Config.from_hf(cfg)
  hf = _vit()
  hf.save_pretrained(tmp_path)
  ours = load_model(tmp_path)
  with pytest.raises(ValueError, match=r"channels last.*\(2, 3, 24, 24\)"):
    ours(np.zeros((2, 3, 24, 24), np.float32))
  with pytest.raises(ValueError, match="smaller than one 6x6 patch"):
    ours(np.zeros((1, 5, 24, 3), np.float32))
  with pytest.raises(ValueError, match="layer_2/mlp.*out of range"):
    ours(np.zeros((1, 24, 24, 3), np.float32), sites=["layer_2/mlp"])


def test_preprocessor_config_sets_the_normalisation(tmp_path):
  hf = _dinov2()
  hf.save_pretrained(tmp_path)
  assert load_model(tmp_path).image_mean == vision.IMAGENET_MEAN
  transformers.BitImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[1, 2, 3],
                                 crop_size={"height": 28, "width": 42},
                                 do_center_crop=True).save_pretrained(tmp_path)
  m = load_model(tmp_path)
  assert m.image_mean == (0.1, 0.2, 0.3) and m.image_std == (1.0, 2.0, 3.0)
  assert m.image_size == (28, 42)
