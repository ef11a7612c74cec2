"""Vocabulary projection of MLP neurons: the tokens a neuron promotes and suppresses.

A decoder's MLP neuron i writes ``a_i * w_i`` into the residual stream, where
``w_i`` is row i of the layer's down-projection (``[neurons, hidden]`` in our Flax
layout). Read directly through the unembedding (the "logit lens" of the neuron's
output weights), its effect on the logits is

    logits_i = W_U^T  P  (g * c(w_i))          [vocab]

with ``g`` the final norm's scale (where the family has one), ``c`` the mean
removal of a final LayerNorm (RMSNorm has none), ``P`` OPT's ``project_out``
when its embedding is narrower than the residual stream, and ``W_U`` the
unembedding ([hidden, vocab]; the transposed input embedding when tied). The
input-dependent 1/sigma of the norm is a positive factor per position and is
left out: it rescales every token's logit alike, so rankings, skew and kurtosis
do not depend on it.

Per neuron this module reports the top and bottom tokens of ``logits_i`` and the
skew and excess kurtosis of ``logits_i`` over the vocabulary (heavy right tail:
a "prediction" neuron; heavy left tail: a "suppression" neuron).

This is the one implementation: the explorer and the polarization study's
vocabulary statistics both call ``vocab_projection``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax.analysis import stats


@dataclasses.dataclass(frozen=True)
class Readout:
  """Where a family keeps the pieces between an MLP neuron and the logits.

  Paths are '/'-joined keys into the Flax parameter tree; ``{i}`` is the layer.

  Attributes:
    down: the down-projection kernel [neurons, hidden] of layer i.
    norm: the final norm's scale [hidden], or None for none.
    center: the final norm is a LayerNorm (removes the mean); False for RMSNorm.
    norm_offset: added to the norm scale (Gemma-style ``1 + scale`` norms).
    project: a [hidden, embed] projection applied before the unembedding, or None.
    unembed: the untied unembedding kernel [embed, vocab].
    embedding: the input embedding [vocab, embed], used when the weights are tied.
  """
  down: str
  norm: str | None
  center: bool
  unembed: str
  embedding: str
  norm_offset: float = 0.0
  project: str | None = None


READOUTS: dict[str, Readout] = {
    "gpt_neox": Readout("layers_{i}/mlp/dense_4h_to_h/kernel", "final_layer_norm/scale", True,
                        "embed_out/kernel", "embed_in/embedding"),
    "llama": Readout("layers_{i}/mlp/down_proj/kernel", "norm/scale", False,
                     "lm_head/kernel", "embed_tokens/embedding"),
    "qwen2": Readout("layers_{i}/mlp/down_proj/kernel", "norm/scale", False,
                     "lm_head/kernel", "embed_tokens/embedding"),
    "opt": Readout("layers_{i}/fc2/kernel", "final_layer_norm/scale", True,
                   "lm_head/kernel", "embed_tokens/embedding", project="project_out/kernel"),
    "gpt2": Readout("h_{i}/mlp/c_proj/kernel", "ln_f/scale", True,
                    "lm_head/kernel", "wte/embedding"),
}


@dataclasses.dataclass(frozen=True)
class VocabProjection:
  """The vocabulary projection of one site's neurons.

  Attributes:
    site: e.g. ``layer_3/mlp``.
    top_ids: [N, k] int32 most promoted token ids, best first.
    top_logits: [N, k] float32 their projected logits.
    bottom_ids: [N, k] int32 most suppressed token ids, most negative first.
    bottom_logits: [N, k] float32.
    skew: [N] float32 skewness of the projected logits over the vocabulary.
    kurtosis: [N] float32 excess kurtosis (m4 / m2^2 - 3) over the vocabulary.
    top_tokens: [N, k] decoded strings of ``top_ids`` (empty without a tokenizer).
    bottom_tokens: [N, k] decoded strings of ``bottom_ids``.
  """
  site: str
  top_ids: np.ndarray
  top_logits: np.ndarray
  bottom_ids: np.ndarray
  bottom_logits: np.ndarray
  skew: np.ndarray
  kurtosis: np.ndarray
  top_tokens: np.ndarray
  bottom_tokens: np.ndarray

  @property
  def num_neurons(self) -> int:
    return int(self.top_ids.shape[0])

  def neuron(self, i: int) -> dict:
    """JSON-friendly summary of neuron i (what the explorer's card shows)."""
    tok = lambda toks, ids, j: str(toks[i, j]) if toks.size else f"#{int(ids[i, j])}"
    return {
        "top": [[tok(self.top_tokens, self.top_ids, j), int(self.top_ids[i, j]),
                 float(self.top_logits[i, j])] for j in range(self.top_ids.shape[1])],
        "bottom": [[tok(self.bottom_tokens, self.bottom_ids, j), int(self.bottom_ids[i, j]),
                    float(self.bottom_logits[i, j])] for j in range(self.bottom_ids.shape[1])],
        "skew": float(self.skew[i]), "kurtosis": float(self.kurtosis[i])}


def _get(params, path: str, what: str):
  node = params
  for key in path.split("/"):
    if not isinstance(node, Mapping) or key not in node:
      raise KeyError(f"vocab projection: parameter {path!r} ({what}) is missing; the "
                     f"tree has {sorted(node) if isinstance(node, Mapping) else type(node)}")
    node = node[key]
  return node


def _has(params, path: str) -> bool:
  try:
    _get(params, path, "")
    return True
  except KeyError:
    return False


def readout_of(model) -> Readout:
  """The ``Readout`` of a ``Model``'s family (decoders only).

  Raises:
    ValueError: an encoder, or a family without a readout entry.
  """
  from rosetta_jax.models import registry  # pylint: disable=g-import-not-at-top
  fam = registry.family_of_config(model.config)
  if not fam.causal:
    raise ValueError(f"model {model.name!r} ({fam.name}) is an encoder without an "
                     "unembedding; the vocabulary projection needs a decoder")
  if fam.name not in READOUTS:
    raise ValueError(f"model {model.name!r}: no vocabulary readout for family {fam.name!r}; "
                     f"known: {sorted(READOUTS)} (add an entry to analysis/vocab.READOUTS)")
  return READOUTS[fam.name]


def readout_matrix(model) -> jnp.ndarray:
  """The [hidden, vocab] float32 map from a residual-stream direction to logits,
  ``diag(g) P W_U`` (the final norm's scale folded in; see the module docstring)."""
  ro = readout_of(model)
  p = model.params
  tied = bool(getattr(model.config, "tie_word_embeddings", False))
  if tied or not _has(p, ro.unembed):
    w_u = jnp.asarray(_get(p, ro.embedding, "input embedding"), jnp.float32).T
  else:
    w_u = jnp.asarray(_get(p, ro.unembed, "unembedding"), jnp.float32)
  if ro.project is not None and _has(p, ro.project):
    w_u = jnp.asarray(_get(p, ro.project, "output projection"), jnp.float32) @ w_u
  if ro.norm is not None and _has(p, ro.norm):
    g = jnp.asarray(_get(p, ro.norm, "final norm scale"), jnp.float32) + ro.norm_offset
    w_u = g[:, None] * w_u
  return w_u


def centers(model) -> bool:
  """Whether the final norm removes the mean (a LayerNorm that is present)."""
  ro = readout_of(model)
  if ro.norm is None or not ro.center:
    return False
  if ro.project is not None:  # OPT: only pre-norm models keep a final LayerNorm
    return bool(getattr(model.config, "final_layer_norm", True))
  return True


@functools.partial(jax.jit, static_argnames=("k", "center"))
def _project_block(w, w_u, *, k: int, center: bool):
  """w [b, hidden], w_u [hidden, V] -> top/bottom k and the logits' skew, kurtosis."""
  w = w.astype(jnp.float32)
  if center:
    w = w - w.mean(axis=1, keepdims=True)
  logits = jnp.dot(w, w_u, precision=jax.lax.Precision.HIGHEST)   # [b, V]
  top_v, top_i = jax.lax.top_k(logits, k)
  bot_v, bot_i = jax.lax.top_k(-logits, k)
  d = logits - logits.mean(axis=1, keepdims=True)
  m2 = jnp.mean(d * d, axis=1)
  m3 = jnp.mean(d ** 3, axis=1)
  m4 = jnp.mean(d ** 4, axis=1)
  ok = m2 > 0
  safe = jnp.where(ok, m2, 1.0)
  skew = jnp.where(ok, m3 / safe ** 1.5, jnp.nan)
  kurt = jnp.where(ok, m4 / safe ** 2 - 3.0, jnp.nan)
  return top_v, top_i, -bot_v, bot_i, skew, kurt


def _decode(tokenizer, ids: np.ndarray) -> np.ndarray:
  if tokenizer is None:
    return np.zeros((0, 0), dtype=object)
  from rosetta_jax.recording import as_tokenizer  # pylint: disable=g-import-not-at-top
  tok = as_tokenizer(tokenizer)
  cache: dict[int, str] = {}
  out = np.empty(ids.shape, dtype=object)
  for idx, i in np.ndenumerate(ids):
    i = int(i)
    if i not in cache:
      cache[i] = tok.decode([i])
    out[idx] = cache[i]
  return out


def vocab_projection(model, sites: Sequence[str] | None = None, k: int = 10,
                     block: int = 1024, vocab_size: int | None = None,
                     decode: bool = True) -> dict[str, VocabProjection]:
  """Top/bottom tokens, skew and kurtosis of every MLP neuron's vocabulary projection.

  Args:
    model: a decoder ``Model`` (GPT-NeoX, Llama, Qwen2, OPT, GPT-2).
    sites: ``layer_{i}/mlp`` sites (default ``model.mlp_sites()``).
    k: tokens kept on each side.
    block: neurons projected per step (bounds the [block, vocab] logits).
    vocab_size: only the first ``vocab_size`` ids count (the tokenizer's real
      vocabulary, where the embedding is padded); default the tokenizer's size
      when known, else the whole embedding.
    decode: decode token strings with ``model.tokenizer``.

  Returns:
    {site: ``VocabProjection``}.
  """
  sites = list(model.mlp_sites() if sites is None else sites)
  ro = readout_of(model)
  w_u = readout_matrix(model)
  if vocab_size is None and model.tokenizer is not None:
    from rosetta_jax.recording import as_tokenizer  # pylint: disable=g-import-not-at-top
    vocab_size = as_tokenizer(model.tokenizer).vocab_size
  if vocab_size is not None:
    w_u = w_u[:, :min(int(vocab_size), w_u.shape[1])]
  k = min(k, int(w_u.shape[1]))
  center = centers(model)
  out = {}
  for site in sites:
    if not site.endswith("/mlp"):
      raise ValueError(f"vocab projection: site {site!r} is not an MLP site (layer_{{i}}/mlp)")
    layer = stats.site_layer(site)
    down = _get(model.params, ro.down.format(i=layer), f"down-projection of {site}")
    n = int(down.shape[0])
    parts = [_project_block(jnp.asarray(down[s:s + block]), w_u, k=k, center=center)
             for s in range(0, n, block)]
    tv, ti, bv, bi, sk, ku = (np.concatenate([np.asarray(p[j]) for p in parts])
                              for j in range(6))
    tok = model.tokenizer if decode else None
    out[site] = VocabProjection(site, ti.astype(np.int32), tv.astype(np.float32),
                                bi.astype(np.int32), bv.astype(np.float32),
                                sk.astype(np.float32), ku.astype(np.float32),
                                _decode(tok, ti), _decode(tok, bi))
  return out


def save_projections(path: str, projections: Mapping[str, VocabProjection]) -> str:
  """Writes {site: VocabProjection} to one .npz (token strings as UTF-8 JSON, no pickles)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  arrays = {}
  for i, (site, p) in enumerate(projections.items()):
    for f in ("top_ids", "top_logits", "bottom_ids", "bottom_logits", "skew", "kurtosis"):
      arrays[f"{i}/{f}"] = getattr(p, f)
    strings = json.dumps({"site": site, "top": p.top_tokens.tolist(),
                          "bottom": p.bottom_tokens.tolist()})
    arrays[f"{i}/strings"] = np.frombuffer(strings.encode("utf-8"), np.uint8)
  tmp = f"{path}.tmp.{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def load_projections(path: str) -> dict[str, VocabProjection]:
  """Reads what ``save_projections`` wrote."""
  import json  # pylint: disable=g-import-not-at-top
  out = {}
  with np.load(path) as z:
    n = len({k.split("/")[0] for k in z.files})
    for i in range(n):
      meta = json.loads(z[f"{i}/strings"].tobytes().decode("utf-8"))
      strings = lambda key: (np.array(meta[key], dtype=object) if meta[key]
                             else np.zeros((0, 0), dtype=object))
      out[meta["site"]] = VocabProjection(
          meta["site"], *(z[f"{i}/{f}"] for f in ("top_ids", "top_logits", "bottom_ids",
                                                   "bottom_logits", "skew", "kurtosis")),
          strings("top"), strings("bottom"))
  return out
