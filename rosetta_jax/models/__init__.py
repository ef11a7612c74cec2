"""Model families (Flax ports) and the Hugging Face loader."""


def load_model(*args, **kwargs):
  """See ``rosetta_jax.models.hf.load_model`` (imported lazily: it pulls transformers)."""
  from rosetta_jax.models import hf
  return hf.load_model(*args, **kwargs)
