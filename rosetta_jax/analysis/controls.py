"""Control sets for comparisons of Rosetta neurons with the other neurons.

Rosetta neurons are not a random sample of a model's neurons: they sit more in
some layers than in others and fire more or less often than the rest. A metric
that depends on layer or on activation frequency (kurtosis does on both) then
differs between Rosetta and non-Rosetta neurons for that reason alone. The
matched control removes it: for the Rosetta neurons of one model it draws as
many non-Rosetta neurons of the same model, in the same layers (exactly the same
count per layer) and with the same distribution of activation frequency.

Matching rule (``matched_control``). Within each layer the frequencies of all
the layer's neurons (Rosetta or not) are cut into ``bins`` quantile bins. For
each bin, as many non-Rosetta neurons of the bin as it holds Rosetta neurons are
drawn without replacement (seeded). Where a bin has too few non-Rosetta neurons
left, the rest are drawn, still without replacement, from the nearest bins of
the same layer that have some left (bins served in increasing order; nearer in
bin index first, at equal distance the lower bin first), and counted as ``spilled`` in the report. When a layer
holds fewer non-Rosetta neurons than Rosetta ones, no draw without replacement
exists: ``on_short="raise"`` (the default) refuses with a ``ValueError`` naming
the layer; ``on_short="replace"`` then draws that layer's shortfall with
replacement, by the same bin rule, and counts it as ``replaced``; a layer with
no non-Rosetta neuron at all then gets no control, its Rosetta neurons counted
as ``unmatched`` (and ``layers_equal`` is False).

The balance report says how well the control matches: the counts per layer, the
two-sample Kolmogorov-Smirnov statistic of frequency between the Rosetta set and
the control (the largest gap between their empirical CDFs), and the largest gap
between their frequency quantiles at q = 0.05, 0.10, ..., 0.95 (in frequency
units).

The other natural control is the set of neurons the dataset-permutation null
pairs up (what selection by high r does on its own): ``null_control`` takes them
from a pair result's first null permutation (``PairResult.null_idx_a/b``: the
mutual pairs under the criterion's own k, before the r floor, which by
construction removes almost all of them); ``null_control_mask`` turns indices
into a mask.

``pair_matched_control`` draws the matched control of both models of a pair at
once (the draw the polarization and domains studies and the explorer's control
rows share), and ``versus`` / ``effects`` give the rank effect sizes (AUROC,
Cliff's delta) and Cohen's d of a group against a control with their intervals.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rosetta_jax.analysis import stats

QUANTILES = np.round(np.arange(0.05, 0.951, 0.05), 2)


@dataclasses.dataclass(frozen=True)
class Balance:
  """How well a control set matches a reference set.

  Attributes:
    per_layer: {layer: (reference count, control count)}.
    layers_equal: every layer holds as many control neurons as reference ones.
    ks: two-sample Kolmogorov-Smirnov statistic of frequency (max CDF gap).
    max_quantile_gap: max over ``QUANTILES`` of |Q_ref(q) - Q_control(q)|.
    spilled: control neurons drawn from another bin than their reference neuron's.
    replaced: control neurons drawn with replacement (``on_short="replace"``).
    unmatched: Rosetta neurons of layers without any non-Rosetta neuron
      (``on_short="replace"``), left without a control.
  """
  per_layer: dict
  layers_equal: bool
  ks: float
  max_quantile_gap: float
  spilled: int = 0
  replaced: int = 0
  unmatched: int = 0

  def to_dict(self) -> dict:
    return {"per_layer": {str(k): list(v) for k, v in self.per_layer.items()},
            "layers_equal": self.layers_equal, "ks": self.ks,
            "max_quantile_gap": self.max_quantile_gap, "spilled": self.spilled,
            "replaced": self.replaced, "unmatched": self.unmatched}


@dataclasses.dataclass(frozen=True)
class MatchedControl:
  """Attributes:
    indices: [R] neuron indices of the control (sorted; repeats only with
      ``on_short="replace"``).
    balance: the ``Balance`` of the control against the Rosetta set.
  """
  indices: np.ndarray
  balance: Balance

  def mask(self, num_neurons: int) -> np.ndarray:
    m = np.zeros(num_neurons, bool)
    m[self.indices] = True
    return m


def balance(layer, frequency, reference, control, spilled: int = 0,
            replaced: int = 0, unmatched: int = 0) -> Balance:
  """The ``Balance`` of neuron indices ``control`` against ``reference``.

  Args:
    layer: [N] int layer of each neuron.
    frequency: [N] activation frequency of each neuron.
    reference, control: neuron indices (``control`` may repeat).
  """
  layer, frequency = np.asarray(layer), np.asarray(frequency, np.float64)
  reference, control = np.asarray(reference, np.int64), np.asarray(control, np.int64)
  layers = np.union1d(np.unique(layer[reference]), np.unique(layer[control]))
  per_layer = {int(l): (int((layer[reference] == l).sum()), int((layer[control] == l).sum()))
               for l in layers}
  if len(reference) and len(control):
    fr, fc = frequency[reference], frequency[control]
    # Two-sample KS: the largest gap between the empirical CDFs, at the pooled values.
    at = np.concatenate([fr, fc])
    cdf = lambda x: np.searchsorted(np.sort(x), at, side="right") / len(x)
    ks = float(np.max(np.abs(cdf(fr) - cdf(fc))))
    gap = float(np.max(np.abs(np.quantile(fr, QUANTILES) - np.quantile(fc, QUANTILES))))
  else:
    ks = gap = float("nan")
  return Balance(per_layer, all(r == c for r, c in per_layer.values()), ks, gap,
                 int(spilled), int(replaced), int(unmatched))


def _quantile_bins(f: np.ndarray, bins: int) -> np.ndarray:
  """Bin index 0..bins-1 of each value by the quantiles of ``f`` itself."""
  edges = np.quantile(f, np.linspace(0, 1, bins + 1)[1:-1])
  return np.searchsorted(edges, f, side="right")


def _draw_layer(rng, ros_bins, cand, cand_bins, bins, replace):
  """Control neurons for one layer: ``ros_bins`` [R] bins of its Rosetta neurons,
  ``cand`` [C] indices of its non-Rosetta neurons and ``cand_bins`` their bins.
  Returns (indices, spilled)."""
  pools = [list(rng.permutation(cand[cand_bins == b])) for b in range(bins)]
  need = np.bincount(ros_bins, minlength=bins)
  out, spilled = [], 0
  # Own bins first, so that spilling never takes a neuron another bin needs for itself.
  for b in range(bins):
    take = min(need[b], len(pools[b]))
    out += pools[b][:take]
    del pools[b][:take]
    need[b] -= take
  for b in range(bins):
    for d in sorted(range(bins), key=lambda x: (abs(x - b), x)):
      if need[b] == 0:
        break
      take = min(need[b], len(pools[d]))
      out += pools[d][:take]
      del pools[d][:take]
      need[b] -= take
      spilled += take
    if need[b] and replace:
      # No neuron of the layer is left: draw with replacement, nearest bin first.
      near = min((d for d in range(bins) if (cand_bins == d).any()),
                 key=lambda x: (abs(x - b), x))
      out += list(rng.choice(cand[cand_bins == near], size=need[b], replace=True))
      need[b] = 0
  return out, spilled


def matched_control(layer, frequency, is_rosetta, seed, bins: int = 10,
                    on_short: str = "raise") -> MatchedControl:
  """Non-Rosetta neurons matched to the Rosetta ones on layer and frequency.

  Args:
    layer: [N] int layer (or site) of each neuron of one model.
    frequency: [N] its activation frequency (fraction of units with x > 0);
      neurons with a non-finite frequency (constant neurons) are never drawn and
      a Rosetta neuron with one is not matched.
    is_rosetta: [N] bool.
    seed: an int, or a sequence of ints (as ``np.random.default_rng`` takes, e.g.
      (seed, resample)); the draw is a function of the inputs and ``seed`` alone.
    bins: quantile bins of frequency per layer (module docstring).
    on_short: "raise" or "replace": what to do when a layer holds fewer
      non-Rosetta neurons than Rosetta ones (module docstring).

  Returns:
    ``MatchedControl``: as many indices as Rosetta neurons with a finite
    frequency, and the balance report.

  Raises:
    ValueError: bad shapes or arguments; a layer short of non-Rosetta neurons
      under ``on_short="raise"``.
  """
  layer = np.asarray(layer)
  f = np.asarray(frequency, np.float64)
  ros = np.asarray(is_rosetta, bool)
  if not layer.shape == f.shape == ros.shape or layer.ndim != 1:
    raise ValueError(f"layer {layer.shape}, frequency {f.shape} and is_rosetta {ros.shape} "
                     "must be equal 1-D shapes")
  if bins < 1:
    raise ValueError(f"bins must be >= 1, got {bins}")
  if on_short not in ("raise", "replace"):
    raise ValueError(f"on_short must be 'raise' or 'replace', got {on_short!r}")
  rng = np.random.default_rng(seed)
  ok = np.isfinite(f)
  out, spilled, replaced, unmatched = [], 0, 0, 0
  for l in np.unique(layer[ros & ok]):
    in_l = (layer == l) & ok
    r_idx, cand = np.flatnonzero(in_l & ros), np.flatnonzero(in_l & ~ros)
    short = len(r_idx) - len(cand)
    if short > 0 and on_short == "replace" and len(cand) == 0:
      unmatched += len(r_idx)
      continue
    if short > 0 and on_short == "raise":
      raise ValueError(
          f"layer {int(l)} has {len(r_idx)} Rosetta neurons but only {len(cand)} non-Rosetta "
          "neurons with a finite frequency: no control without replacement exists "
          "(on_short='replace' draws the shortfall with replacement)")
    bin_of = np.full(len(f), -1, np.int64)
    bin_of[in_l] = _quantile_bins(f[in_l], bins)
    got, sp = _draw_layer(rng, bin_of[r_idx], cand, bin_of[cand], bins, replace=short > 0)
    out += got
    spilled += sp
    replaced += max(short, 0)
  idx = np.sort(np.asarray(out, np.int64))
  matched = np.flatnonzero(ros & ok)
  return MatchedControl(idx, balance(layer, f, matched, idx, spilled, replaced, unmatched))


def random_control(is_rosetta, seed: int, eligible=None) -> np.ndarray:
  """As many non-Rosetta neurons as Rosetta ones, drawn uniformly (no matching):
  the baseline a matched control has to beat. Sorted indices."""
  ros = np.asarray(is_rosetta, bool)
  pool = ~ros if eligible is None else ~ros & np.asarray(eligible, bool)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(np.flatnonzero(pool), size=int(ros.sum()), replace=False))


def null_control_mask(num_neurons: int, null_idx) -> np.ndarray:
  """[N] bool: the neurons that the dataset-permutation null pairs up.

  Args:
    num_neurons: N, the model's studied neurons.
    null_idx: indices (into the same concatenated sites) of the neurons in a
      mutual pair of the null matching.
  """
  idx = np.asarray(null_idx, np.int64)
  if idx.size and (idx.min() < 0 or idx.max() >= num_neurons):
    raise ValueError(f"null indices must lie in [0, {num_neurons})")
  m = np.zeros(num_neurons, bool)
  m[idx] = True
  return m


def site_index(offsets) -> np.ndarray:
  """[N] site (layer) index of each neuron from a model's site offsets [S + 1]."""
  offsets = np.asarray(offsets, np.int64)
  return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def pair_matched_control(offsets_a, offsets_b, frequency, is_rosetta, seed,
                         bins: int = 10, on_short: str = "replace"):
  """The matched control of a pair's pooled neurons (model A's, then B's).

  Each model gets its own ``matched_control`` (its layers, its frequencies) with
  the seed ``(*seed, side)``, side 0 for A and 1 for B.

  Args:
    offsets_a, offsets_b: [S + 1] each model's site offsets (``PairResult``).
    frequency: [Na + Nb] activation frequency of the pooled neurons.
    is_rosetta: [Na + Nb] bool.
    seed: a sequence of ints (e.g. (cfg.seed,) or (cfg.seed, resample)).
    bins, on_short: as ``matched_control``.

  Returns:
    (sorted indices into the pooled neurons, [Balance of A, Balance of B]).
  """
  na = int(np.asarray(offsets_a)[-1])
  nb = int(np.asarray(offsets_b)[-1])
  f, ros = np.asarray(frequency), np.asarray(is_rosetta, bool)
  if f.shape != (na + nb,) or ros.shape != (na + nb,):
    raise ValueError(f"frequency {f.shape} and is_rosetta {ros.shape} must be [{na + nb}]")
  idx, bal = [], []
  for side, (lo, hi, off) in enumerate(((0, na, offsets_a), (na, na + nb, offsets_b))):
    mc = matched_control(site_index(off), f[lo:hi], ros[lo:hi], seed=(*tuple(seed), side),
                         bins=bins, on_short=on_short)
    idx.append(mc.indices + lo)
    bal.append(mc.balance)
  return np.concatenate(idx), bal


def null_control(res) -> np.ndarray:
  """Sorted unique indices into a pair's pooled neurons (A's, then B's) of the
  neurons in a mutual pair of the first null permutation (``res.null_idx_a/b``)."""
  na = int(res.neurons_a)
  idx = np.concatenate([np.asarray(res.null_idx_a, np.int64),
                        na + np.asarray(res.null_idx_b, np.int64)])
  return np.flatnonzero(null_control_mask(na + int(res.neurons_b), idx))


def versus(values, in_group, control, sign: int = 1) -> tuple[float, float]:
  """(AUROC, Cohen's d) of the group ``in_group`` [N] bool against the neurons
  ``control`` (indices, repeats counted), oriented by ``sign`` (positive: the group
  is larger after the sign). NaN values are left out; NaN when a side has < 2."""
  v = np.asarray(values, np.float64) * sign
  x, y = v[np.asarray(in_group, bool)], v[np.asarray(control, np.int64)]
  x, y = x[np.isfinite(x)], y[np.isfinite(y)]
  if len(x) < 2 or len(y) < 2:
    return float("nan"), float("nan")
  return stats.auroc(x, y), stats.cohens_d(x, y)


def effects(auroc: float, d: float, boot_auroc, boot_d) -> dict:
  """AUROC, Cohen's d and Cliff's delta (2 AUROC - 1) with their basic bootstrap
  intervals (``stats.interval``; AUROC clipped to [0, 1], delta to [-1, 1])."""
  ba, bd = np.asarray(boot_auroc, np.float64), np.asarray(boot_d, np.float64)
  delta = 2 * auroc - 1
  return {"auroc": float(auroc), "auroc_ci": stats.interval(ba, auroc, bounds=(0.0, 1.0)),
          "d": float(d), "d_ci": stats.interval(bd, d),
          "delta": float(delta),
          "delta_ci": stats.interval(2 * ba - 1, delta, bounds=(-1.0, 1.0))}
