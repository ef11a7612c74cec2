"""Model families (Flax ports) and the Hugging Face / GGUF loader."""


def load_model(*args, **kwargs):
  """See ``rosetta_jax.models.hf.load_model`` (imported lazily: it pulls transformers).

  Takes a checkpoint directory, a ``.gguf`` file, a cached hub id, or
  ``"offline:NAME"`` for a checkpoint shipped in a pip package
  (``rosetta_jax.models.offline``).
  """
  if args and isinstance(args[0], str) and args[0].startswith("offline:"):
    from rosetta_jax.models import offline
    return offline.load(*args, **kwargs)
  from rosetta_jax.models import hf
  return hf.load_model(*args, **kwargs)


def check_model(*args, **kwargs):
  """See ``rosetta_jax.models.hf.check_model``: every check ``load_model`` makes
  before it reads a tensor (config, weight-file headers, tokenizer), without the
  weights; returns the family config. ``"offline:NAME"`` checks the offline source
  exists (assembling it if needed)."""
  if args and isinstance(args[0], str) and args[0].startswith("offline:"):
    from rosetta_jax.models import hf, offline
    src = offline.source(args[0])
    out_dir = offline.assemble(src.name)
    return hf.check_model(out_dir, *args[1:], gguf_file=src.gguf_file, **kwargs)
  from rosetta_jax.models import hf
  return hf.check_model(*args, **kwargs)
