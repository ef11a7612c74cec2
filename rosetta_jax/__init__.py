from rosetta_jax.models import load_model  # noqa: F401
from rosetta_jax.match import (Matches, MatchResult, find_rosetta,  # noqa: F401
                               find_rosetta_zoo, match, mutual_pairs)
from rosetta_jax import record  # noqa: F401  (a callable module: rj.record(model, docs, ...))
from rosetta_jax.store import open_store  # noqa: F401
