"""Float64 NumPy reference for the matcher tests (np.corrcoef + stable argsort); no tests here."""

import numpy as np


def corr(a, b):
  """[Na, Nb] float64 Pearson r; -inf where a column is constant."""
  na = a.shape[1]
  with np.errstate(divide="ignore", invalid="ignore"):
    c = np.corrcoef(a.T.astype(np.float64), b.T.astype(np.float64))[:na, na:]
  const_a = a.max(0) == a.min(0)
  const_b = b.max(0) == b.min(0)
  c[const_a, :] = -np.inf
  c[:, const_b] = -np.inf
  return c


def topk(c, k):
  """Row top-k; ties: lowest index first (stable sort); -1 / nan where -inf."""
  if c.shape[1] < k:
    c = np.concatenate([c, np.full((c.shape[0], k - c.shape[1]), -np.inf)], axis=1)
  idx = np.argsort(-c, axis=1, kind="stable")[:, :k]
  r = np.take_along_axis(c, idx, 1)
  bad = ~np.isfinite(r)
  return np.where(bad, -1, idx), np.where(bad, np.nan, r)


def mutual(c, k):
  """Set of mutual top-k pairs (i, j)."""
  ai, _ = topk(c, k)
  bi, _ = topk(c.T, k)
  out = set()
  for i in range(c.shape[0]):
    for j in ai[i]:
      if j >= 0 and i in bi[j]:
        out.add((i, int(j)))
  return out
