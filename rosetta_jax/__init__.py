from rosetta_jax.models import load_model  # noqa: F401
