"""Bootstrap intervals for the fitted variants, and the verdict rule.

Both rules are written here, in code, before the comparison they decide is run
(``theory.predict.evaluate`` applies them to whatever counts it is given):

* ``RESAMPLE_RULE``: how a resample of the measured counts is drawn. The scaling
  study's summary keeps each size's mean count and its 95% model-and-document
  interval, not the resampled counts themselves, so each resample draws every
  size's log count independently from a split normal whose two halves put the
  interval's ends at +-1.96 standard deviations. Documents are shared by all
  sizes, so the real resamples are positively correlated across sizes; drawing
  sizes independently ignores that and errs towards wider slope intervals.
* ``VERDICT_RULE``: when a mechanism is said to fit.

Every resample refits the variant (all its starts, ``variants.fit_many``, in the
same vmapped program as the point fits) on all sizes and on the ``n_fit`` smallest
ones, and the plain power law on the same ``n_fit``; intervals of parameters,
beta and counts are the project's basic bootstrap interval
(``analysis.stats.interval``); the held-out error is reported as its central 95%
over resamples.
"""

from __future__ import annotations

import jax
import numpy as np

from rosetta_jax.analysis import stats
from theory import variants as V

Z95 = 1.959963984540054
RESAMPLE_RULE = ("each size's log count drawn independently from a split normal with the "
                 "measured 95% model-and-document interval's ends at +-1.96 s.d. (the "
                 "summary keeps intervals, not resampled counts)")
BEATS_LINE = 0.95
VERDICT_RULE = (
    "Under the declared `tokens` rule only, a mechanism fits when (a) a priori (free "
    "parameters at their a priori values) its predicted count lies inside the measured 95% "
    "interval at every measured size, or (b) out of sample (fitted on the smallest sizes) its "
    "prediction lies inside the measured interval at every held-out size and its held-out rms "
    f"log error is below the plain power law's in at least {BEATS_LINE:.0%} of the bootstrap "
    "resamples. A fit to all sizes is a shape check and never makes a mechanism fit; the "
    "`words` rule is a sensitivity row and does not enter the verdict.")
BOUNDS = {"detect": (0.0, 1.0), "gamma": (0.0, 1.0), "seed_noise": (0.0, None),
          "n_c": (0.0, None)}


def resample_counts(counts, count_ci, reps: int, seed: int = 0) -> np.ndarray:
  """[reps, S] resampled counts by ``RESAMPLE_RULE``.

  Args:
    counts: [S] measured counts (> 0); count_ci: [S, 2] their 95% intervals.
  """
  c = np.asarray(counts, np.float64)
  ci = np.asarray(count_ci, np.float64)
  if np.any(c <= 0) or np.any(ci[:, 0] <= 0) or np.any(ci[:, 0] > c) or np.any(ci[:, 1] < c):
    raise ValueError(f"need 0 < lo <= count <= hi, got {c.tolist()} {ci.tolist()}")
  lo = (np.log(c) - np.log(ci[:, 0])) / Z95
  hi = (np.log(ci[:, 1]) - np.log(c)) / Z95
  z = np.random.default_rng(seed).standard_normal((reps, len(c)))
  return c * np.exp(np.where(z < 0, z * lo, z * hi))


def _counts_many(name, theta, sizes, alpha, f, size) -> np.ndarray:
  th = {k: jax.numpy.asarray(x, jax.numpy.float32) for k, x in theta.items()}
  return np.asarray(jax.vmap(lambda t: V.counts(name, t, sizes, alpha, f, size))(th), float)


def _rms(pred, obs) -> np.ndarray:
  return np.sqrt(np.mean(np.log(pred / obs) ** 2, axis=-1))


def _range(x) -> list[float]:
  """The central 95% of a statistic over resamples (an error's spread across redraws of
  the data; not an interval for a parameter, so not the basic interval, which reflects an
  error of 0 to [0, 0])."""
  x = np.asarray(x, float)
  x = x[np.isfinite(x)]
  return [float(v) for v in np.quantile(x, [0.025, 0.975])] if len(x) >= 2 else [np.nan] * 2


def _physical_ci(name, theta, point: dict) -> dict:
  v = V.get(name)
  rows = [v.physical({k: x[i] for k, x in theta.items()}) for i in range(len(next(iter(
      theta.values()))))]
  return {k: stats.interval([r[k] for r in rows], p, bounds=BOUNDS.get(k, (None, None)))
          for k, p in point.items()}


def variant(name: str, sizes, boot: np.ndarray, alpha: float, f: float, size: int,
            n_fit: int, point: dict, pl_rms: np.ndarray, th_all: dict, loss_all,
            th_oos: dict, loss_oos) -> dict:
  """Bootstrap of one variant's fit to all sizes and its out-of-sample test.

  Args:
    boot: [B, S] resampled counts (``resample_counts``).
    point: the variant's entry of ``predict.evaluate`` (``fit_all``, ``out_of_sample``
      with their ``physical``, ``counts``, ``beta`` and ``score``).
    pl_rms: [B] the power law's held-out rms log error on each resample.
    th_all, loss_all: the variant fitted to each resample on all sizes ({param: [B]},
      [B]; ``variants.fit_many``); th_oos, loss_oos: on its ``n_fit`` smallest sizes.

  Returns:
    dict ``fit_all`` and ``out_of_sample`` with ``physical_ci``, ``beta_ci``,
    ``counts_ci`` [S, 2]; ``out_of_sample`` also ``rms_log_error_range`` (the central
    95% of the held-out rms log error against each resample's own counts) and
    ``beats_line`` (the fraction of resamples whose held-out rms log error is
    below the power law's); ``dropped`` resamples whose every start diverged.
  """
  sizes = np.asarray(sizes, float)
  held = np.arange(n_fit, len(sizes))
  out = {}
  for key, th, loss in (("fit_all", th_all, loss_all), ("out_of_sample", th_oos, loss_oos)):
    p = point[key]
    pred = _counts_many(name, th, sizes, alpha, f, size)                 # [B, S]
    ok = np.isfinite(np.asarray(loss)) & np.all(np.isfinite(pred) & (pred > 0), axis=1)
    pred = pred[ok]
    th = {k: np.asarray(x)[ok] for k, x in th.items()}
    betas = [stats.loglog_slope(sizes, r) for r in pred]
    o = {"physical_ci": _physical_ci(name, th, p["physical"]),
         "beta_ci": stats.interval(betas, p["beta"]),
         "counts_ci": [stats.interval(pred[:, j], p["counts"][j], bounds=(0.0, None))
                       for j in range(len(sizes))],
         "dropped": int((~ok).sum())}
    if key == "out_of_sample":
      rms = _rms(pred[:, held], boot[ok][:, held])
      o["rms_log_error_range"] = _range(rms)
      o["beats_line"] = float(np.mean(rms < pl_rms[ok]))
    out[key] = o
  return out


def power_law(sizes, boot: np.ndarray, n_fit: int, point: dict) -> tuple[dict, np.ndarray]:
  """The plain power law refitted on each resample's ``n_fit`` smallest sizes.

  Returns:
    (dict ``beta_ci``, ``counts_ci``, ``rms_log_error_range``; [B] held-out rms log errors).
  """
  x = np.log(np.asarray(sizes, float))
  held = np.arange(n_fit, len(x))
  pred = []
  for row in boot:
    line = stats.ols(x[:n_fit], np.log(row[:n_fit]))
    pred.append(np.exp(line.intercept + line.slope * x))
  pred = np.asarray(pred)
  slopes = [stats.ols(x[:n_fit], np.log(r[:n_fit])).slope for r in boot]
  rms = _rms(pred[:, held], boot[:, held])
  return {"beta_ci": stats.interval(slopes, point["beta"]),
          "counts_ci": [stats.interval(pred[:, j], point["counts"][j], bounds=(0.0, None))
                        for j in range(len(x))],
          "rms_log_error_range": _range(rms)}, rms


def verdict(res: dict) -> dict:
  """``VERDICT_RULE`` applied to one rule's ``predict.evaluate`` result.

  Returns:
    dict ``rule`` (the text), ``mechanisms`` {name: {apriori, out_of_sample, fits}},
    ``fits`` (names that fit), ``text`` (one plain sentence).
  """
  mech = {}
  for name, v in res["variants"].items():
    a = all(v["apriori"]["score"]["in_interval"])
    o = v["out_of_sample"]
    beats = o.get("bootstrap", {}).get("beats_line")
    b = all(o["score"]["in_interval"]) and beats is not None and beats >= BEATS_LINE
    mech[name] = {"apriori": bool(a), "out_of_sample": bool(b), "fits": bool(a or b),
                  "beats_line": beats}
  fits = [n for n, x in mech.items() if x["fits"]]
  if fits:
    text = ("fits by the rule: " + ", ".join(
        f"{n} ({'a priori' if mech[n]['apriori'] else 'out of sample'})" for n in fits))
  else:
    text = ("no mechanism fits by the rule: none predicts every count a priori, and none "
            "extrapolates inside every held-out interval while beating the power law in "
            f"{BEATS_LINE:.0%} of resamples")
  return {"rule": VERDICT_RULE, "mechanisms": mech, "fits": fits, "text": text}
