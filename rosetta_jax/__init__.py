"""rosetta_jax: find Rosetta Neurons and measure how they scale, in JAX.

The few names a notebook needs::

  import rosetta_jax as rj
  model = rj.load_model("path/or/offline:NAME")       # Flax port of an HF checkpoint
  logits, sites = model(tokens, sites=["layer_3/mlp"])
  store = rj.record(model, docs, model.mlp_sites(), "acts/a")   # chunked, resumable
  vit = rj.load_model("offline:dinov2-vits14-imgfocus")  # vision: pixels in, patch sites out
  store = rj.record_images(vit, rj.load_images("heldout"), None, "acts/v", grid=(7, 7))
  res = rj.match(a, b, k=1)                           # [T, Na] x [T, Nb] -> top-k both ways
  ia, jb, r = rj.mutual_pairs(res)                    # best buddies
  table = rj.find_rosetta({site: acts}, {site: acts}) # across layers, with a null option
  fit = rj.fit_power_law(sizes, counts, boot_counts)  # count ~ N^beta with a CI
  ex = rj.explore("runs/tiny")                        # the run's explorer page and cards

Everything else lives in submodules a user rarely imports: ``models``, ``data``,
``match``, ``analysis``, ``studies``, ``zoo``, ``report``, ``explorer``.
"""

from rosetta_jax.analysis.stats import PowerLawFit, fit_power_law
from rosetta_jax.data.corpus import Document, load_corpus
from rosetta_jax.explorer.reader import explore
from rosetta_jax.data.images import ImageSet, load_images
from rosetta_jax.image_recording import record_images
from rosetta_jax.match import (Matches, MatchResult, SketchConfig, find_rosetta,
                               find_rosetta_zoo, match, mutual_pairs)
from rosetta_jax.match.plan import plan_match
from rosetta_jax.models import check_model, load_model
from rosetta_jax.models.base import Model
from rosetta_jax.recording import record
from rosetta_jax.store import open_store

__all__ = [
    "Document", "ImageSet", "Matches", "MatchResult", "Model", "PowerLawFit", "SketchConfig",
    "check_model", "explore", "find_rosetta", "find_rosetta_zoo", "fit_power_law",
    "load_corpus", "load_images", "load_model", "match", "mutual_pairs", "open_store",
    "plan_match", "record", "record_images",
]
