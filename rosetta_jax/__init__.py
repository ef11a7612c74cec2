from rosetta_jax.models import load_model  # noqa: F401
from rosetta_jax.match import (Matches, MatchResult, find_rosetta,  # noqa: F401
                               find_rosetta_zoo, match, mutual_pairs)
