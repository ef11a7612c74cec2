"""The model families known to the loader, keyed by Hugging Face ``model_type``.

Each family is declared once as data: its config class (with ``from_hf``), its Flax
module, its tensor converter, whether it is causal, and the Hugging Face auto class
that builds the PyTorch reference (used for GGUF name mapping and in tests).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Family:
  """A model family.

  Attributes:
    name: family name (the Hugging Face ``model_type``).
    module_path: the module holding the port (``rosetta_jax.models.<name>``).
    config_cls: attribute name of the config dataclass in that module.
    module_cls: attribute name of the Flax module.
    causal: False for encoders (BERT): their "logits" are hidden states.
    hf_auto_class: transformers auto class of the reference PyTorch model.
    modality: "text" (tokens in, ``base.Model``) or "vision" (pixels in,
      ``vision.VisionModel``).
  """
  name: str
  module_path: str
  config_cls: str
  module_cls: str
  causal: bool = True
  hf_auto_class: str = "AutoModelForCausalLM"
  modality: str = "text"

  @property
  def module(self):
    return importlib.import_module(self.module_path)

  def config_from_hf(self, hf_config, dtype: str):
    return getattr(self.module, self.config_cls).from_hf(hf_config, dtype=dtype)

  def build(self, config):
    return getattr(self.module, self.module_cls)(config)

  @property
  def convert(self) -> Callable[[Any, str, Any], dict]:
    return self.module.convert_hf_tensor


def _vision(model_type: str, module: str, config_cls: str, module_cls: str) -> Family:
  return Family(model_type, f"rosetta_jax.models.{module}", config_cls, module_cls,
                causal=False, hf_auto_class="AutoModel", modality="vision")


# Vision encoders; "clip" is the vision tower of a full CLIPModel checkpoint.
_VISION = (
    _vision("vit", "vit", "ViTConfig", "ViT"),
    _vision("dinov2", "dinov2", "Dinov2Config", "Dinov2"),
    _vision("dinov2_with_registers", "dinov2", "Dinov2Config", "Dinov2"),
    _vision("clip_vision_model", "clip_vision", "CLIPVisionConfig", "CLIPVision"),
    _vision("clip", "clip_vision", "CLIPVisionConfig", "CLIPVision"),
)

FAMILIES: dict[str, Family] = {
    f.name: f for f in (
        Family("gpt_neox", "rosetta_jax.models.gpt_neox", "GPTNeoXConfig", "GPTNeoX"),
        Family("opt", "rosetta_jax.models.opt", "OPTConfig", "OPT"),
        Family("gpt2", "rosetta_jax.models.gpt2", "GPT2Config", "GPT2"),
        Family("qwen2", "rosetta_jax.models.qwen2", "Qwen2Config", "Qwen2"),
        Family("llama", "rosetta_jax.models.llama", "LlamaConfig", "Llama"),
        Family("bert", "rosetta_jax.models.bert", "BertConfig", "Bert", causal=False,
               hf_auto_class="AutoModel"),
        Family("gemma2", "rosetta_jax.models.gemma", "Gemma2Config", "Gemma"),
        Family("gemma3_text", "rosetta_jax.models.gemma", "Gemma3Config", "Gemma"),
        # Gemma 3 4B-27B: Gemma3ForConditionalGeneration; the text decoder is loaded.
        Family("gemma3", "rosetta_jax.models.gemma", "Gemma3Config", "Gemma",
               hf_auto_class="Gemma3ForConditionalGeneration"),
    ) + _VISION
}


def family(model_type: str, source: str = "") -> Family:
  """The family of a Hugging Face ``model_type``.

  Raises:
    ValueError: naming the model_type, its source, and the supported ones.
  """
  try:
    return FAMILIES[model_type]
  except KeyError:
    where = f" (in {source})" if source else ""
    raise ValueError(f"unknown model_type {model_type!r}{where}; supported: "
                     f"{sorted(FAMILIES)}") from None


def family_of_config(config) -> Family:
  """The (first listed) family whose config dataclass is ``config``'s class."""
  for f in FAMILIES.values():
    if type(config).__module__ == f.module_path and type(config).__name__ == f.config_cls:
      return f
  raise ValueError(f"no family for config type {type(config).__name__}")
