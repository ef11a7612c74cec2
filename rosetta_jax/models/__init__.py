"""Model families (Flax ports) and the Hugging Face loader."""


def load_model(*args, **kwargs):
  """See ``rosetta_jax.models.hf.load_model`` (imported lazily: it pulls transformers).

  ``"offline:NAME"`` loads a checkpoint shipped in a pip package
  (``rosetta_jax.models.offline``).
  """
  if args and isinstance(args[0], str) and args[0].startswith("offline:"):
    from rosetta_jax.models import offline
    return offline.load(*args, **kwargs)
  from rosetta_jax.models import hf
  return hf.load_model(*args, **kwargs)
