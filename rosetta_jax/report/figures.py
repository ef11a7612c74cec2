"""Plotly figures of the scaling study."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from rosetta_jax.analysis.stats import PowerLawFit


def ci_err(values, lo, hi):
  values, lo, hi = map(np.asarray, (values, lo, hi))
  return dict(type="data", symmetric=False, array=hi - values, arrayminus=values - lo)


def count_vs_size(fit: PowerLawFit, sizes, counts, lo, hi, labels: Sequence[str],
                  title: str = "Rosetta neurons vs model size") -> go.Figure:
  """Log-log count vs total neurons, per-size bootstrap CIs, the fit and its band."""
  xs = np.geomspace(min(sizes) * 0.8, max(sizes) * 1.25, 50)
  band_lo, band_hi = fit.band(xs)
  fig = go.Figure()
  fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]),
                           y=np.concatenate([band_hi, band_lo[::-1]]), fill="toself",
                           fillcolor="rgba(31,119,180,0.15)", line=dict(width=0),
                           name=f"{int(fit.n_boot)}-resample CI band", hoverinfo="skip"))
  fig.add_trace(go.Scatter(
      x=xs, y=fit.predict(xs), mode="lines", line=dict(color="#1f77b4"),
      name=f"fit: beta = {fit.beta:.3f} [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]"))
  fig.add_trace(go.Scatter(x=xs, y=fit.predict(xs[:1])[0] * xs / xs[0], mode="lines",
                           line=dict(color="#999", dash="dot"), name="linear (beta = 1)"))
  fig.add_trace(go.Scatter(x=sizes, y=counts, mode="markers", text=list(labels),
                           error_y=ci_err(counts, lo, hi), marker=dict(size=9, color="#d62728"),
                           name="measured (95% CI)"))
  fig.update_layout(title=title, xaxis=dict(type="log", title="total MLP neurons N"),
                    yaxis=dict(type="log", title="Rosetta neurons (mutual NN pairs)"),
                    template="plotly_white", height=480)
  return fig


def fraction_vs_size(fit: PowerLawFit, sizes, fractions, lo, hi,
                     labels: Sequence[str]) -> go.Figure:
  """Fraction of neurons that are Rosetta vs size (log-log)."""
  xs = np.geomspace(min(sizes) * 0.8, max(sizes) * 1.25, 50)
  fig = go.Figure()
  fig.add_trace(go.Scatter(
      x=xs, y=fit.predict(xs) / xs, mode="lines",
      name=f"fit: N^{fit.beta_fraction:.3f} [{fit.ci_fraction[0]:.3f}, {fit.ci_fraction[1]:.3f}]"))
  fig.add_trace(go.Scatter(x=sizes, y=fractions, mode="markers", text=list(labels),
                           error_y=ci_err(fractions, lo, hi), marker=dict(size=9),
                           name="measured (95% CI)"))
  fig.update_layout(title="Rosetta fraction vs model size",
                    xaxis=dict(type="log", title="total MLP neurons N"),
                    yaxis=dict(type="log", title="fraction of neurons"),
                    template="plotly_white", height=420)
  return fig


def r_distribution(r_by_label: Mapping[str, np.ndarray],
                   title: str = "Correlation of matched pairs") -> go.Figure:
  """A violin of matched-pair r per size."""
  fig = go.Figure()
  for label, r in r_by_label.items():
    fig.add_trace(go.Violin(y=np.asarray(r), name=label, box_visible=True,
                            meanline_visible=True, points=False))
  fig.update_layout(title=title, yaxis=dict(title="Pearson r"), template="plotly_white",
                    height=420, showlegend=False)
  return fig


def depth_profile(density_by_label: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> go.Figure:
  """Rosetta density vs relative depth, one line per size: {label: (depths, density)}."""
  fig = go.Figure()
  for label, (x, y) in density_by_label.items():
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label))
  fig.update_layout(title="Rosetta density by relative depth",
                    xaxis=dict(title="relative layer depth", range=[-0.05, 1.05]),
                    yaxis=dict(title="fraction of the layer's neurons"),
                    template="plotly_white", height=420)
  return fig


def beta_forest(rows: Sequence[tuple[str, float, Sequence[float]]],
                title: str = "beta under each criterion") -> go.Figure:
  """One beta with its interval per row (name, beta, (lo, hi)), beta = 1 marked."""
  names = [r[0] for r in rows]
  betas = np.array([r[1] for r in rows], np.float64)
  lo = np.array([r[2][0] for r in rows], np.float64)
  hi = np.array([r[2][1] for r in rows], np.float64)
  fig = go.Figure(go.Scatter(
      x=betas, y=names, mode="markers", marker=dict(size=9, color="#1f77b4"),
      error_x=dict(type="data", symmetric=False, array=hi - betas, arrayminus=betas - lo)))
  fig.add_vline(x=1.0, line=dict(color="#999", dash="dot"))
  fig.update_layout(title=title, xaxis=dict(title="beta (95% CI)"),
                    yaxis=dict(autorange="reversed"), template="plotly_white",
                    height=120 + 32 * len(rows))
  return fig


def beta_vs_budget(units: Sequence[float], betas, cis,
                   title: str = "beta against the unit budget") -> go.Figure:
  """beta (declared criterion) on nested document subsets, by units matched."""
  betas = np.asarray(betas, np.float64)
  cis = np.asarray(cis, np.float64).reshape(-1, 2)
  fig = go.Figure(go.Scatter(
      x=list(units), y=betas, mode="lines+markers",
      error_y=dict(type="data", symmetric=False, array=cis[:, 1] - betas,
                   arrayminus=betas - cis[:, 0])))
  fig.update_layout(title=title, xaxis=dict(type="log", title="units matched"),
                    yaxis=dict(title="beta (95% CI)"), template="plotly_white", height=400)
  return fig


def learning_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float],
                                                Sequence[float]]],
                    title: str, yaxis: str = "held-out loss (nats/token)") -> go.Figure:
  """Loss against training steps, one line per arm: {arm: (steps, mean, lo, hi)},
  the interval drawn as error bars (the data-selection study's arms)."""
  fig = go.Figure()
  for name, (steps, mean, lo, hi) in curves.items():
    fig.add_trace(go.Scatter(x=list(steps), y=list(mean), mode="lines+markers", name=name,
                             error_y=ci_err(mean, lo, hi)))
  fig.update_layout(title=title, xaxis_title="continued-pretraining steps", yaxis_title=yaxis,
                    template="plotly_white", height=420)
  return fig
