"""The matcher: exact blockwise Pearson top-k, criteria, sketching and planning.

Public API::

  match(a, b, k=1, ...) -> MatchResult          # top-k neighbours both ways
  mutual_pairs(result, k=1, r_min=None)         # best buddies / mutual k-NN
  find_rosetta(acts_a, acts_b, ...) -> Matches  # across sites, layers, depth bands
  find_rosetta_zoo(acts, anchor, ...)           # buddies in every other model
  plan_match(preset_a, preset_b, units, ...)    # flops / memory / time estimate
"""

from rosetta_jax.match.api import match
from rosetta_jax.match.correlate import MatchResult
from rosetta_jax.match.moments import Moments
from rosetta_jax.match.sources import ActivationSource, ArraySource
from rosetta_jax.match.rosetta import (Matches, document_permutation, find_rosetta,
                                       find_rosetta_zoo, mutual_pairs)
from rosetta_jax.match.sketch import SketchConfig, match_sketched
from rosetta_jax.match.plan import MatchPlan, plan_match
