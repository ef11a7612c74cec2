"""``match``: the notebook entry point of the matcher.

Arrays (numpy or jax) go through one jitted, sharded call of the kernel in
``correlate.py``; activation sources (``sources.py``) are streamed chunk by chunk
through the same per-block code (``stream.py``), never loading all units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rosetta_jax import sharding as shd
from rosetta_jax.match import correlate as cor
from rosetta_jax.match import prep
from rosetta_jax.match.moments import Moments

DEFAULT_BLOCK = 2048   # neurons per block: a 2048 x 2048 float32 Gram is 16 MiB.
DEFAULT_CHUNK = 2048   # units per matmul on a CPU (the tuned size there).
ACCEL_CHUNK = 1024     # on accelerators: a float32 GEMM there (cuBLAS) sums its K
# terms with per-thread running sums, and over K = 2048 units of sparse ReLU
# activations r drifted up to 1.3e-5 from float64 on an H100 (T = 262144); at
# 1024 the drift measured <= 2e-6, inside the 1e-5 exactness spec.


ACCEL_BLOCK = 4096     # on accelerators: fewer, larger GEMMs (H100, T = 65536,
# N = 4096: 0.80 of the matmul roofline at 4096 vs 0.73 at 2048).


def default_chunk() -> int:
  """Units per matmul when ``chunk`` is not given: see ``ACCEL_CHUNK``."""
  return DEFAULT_CHUNK if jax.default_backend() == "cpu" else ACCEL_CHUNK


def default_block() -> int:
  """Neurons per block when not given: 2048 on a CPU, ``ACCEL_BLOCK`` elsewhere."""
  return DEFAULT_BLOCK if jax.default_backend() == "cpu" else ACCEL_BLOCK


def check_k(k) -> int:
  """``k`` as an int; raises unless it is a positive integer (not a bool)."""
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"k must be a positive integer, got {k!r} ({type(k).__name__})")
  if k < 1:
    raise ValueError(f"k must be a positive integer, got {k}")
  return int(k)


def prepare(a, b, *, names=("a", "b"), moments_a=None, moments_b=None, chunk: int = 8192):
  """Validates the inputs and prepares both sides for the kernel (``prep.py``).

  Returns:
    (side_a, side_b): ``prep.Side``s.

  Raises:
    ValueError: mismatched unit counts, too few units, empty neuron axes, or
      non-finite values (naming the site from ``names`` and the neuron).
    TypeError: inputs that are not real-valued [units, neurons] data.
  """
  a, b = prep.as_input(a, names[0]), prep.as_input(b, names[1])
  ta, tb = (int(x.num_units if prep.is_source(x) else x.shape[0]) for x in (a, b))
  if ta != tb:
    raise ValueError(f"mismatched unit counts: {names[0]!r} has {ta} units, "
                     f"{names[1]!r} has {tb}; both must see the same units")
  if ta < 2:
    raise ValueError(f"need at least 2 units to correlate, got {ta}")
  return (prep.prepare_side(a, names[0], moments_a, chunk),
          prep.prepare_side(b, names[1], moments_b, chunk))


def match(a, b, k: int = 1, *, block_a: int | None = None, block_b: int | None = None,
          chunk: int | None = None, mesh=None, compute_dtype=jnp.float32, precision=None,
          names=("a", "b"), moments_a: Moments | None = None,
          moments_b: Moments | None = None, sketch=None,
          progress: bool = False) -> cor.MatchResult:
  """Top-k Pearson neighbours of every neuron of A in B and of B in A.

  Args:
    a: [T, Na] activations (numpy or jax array of any real dtype, a nested
      list) or an ``ActivationSource``.
    b: [T, Nb] activations or source, over the same T units.
    k: neighbours per neuron, a positive integer.
    block_a, block_b: neurons per block (default 2048 on a CPU, 4096 on
      accelerators for in-memory arrays: ``ACCEL_BLOCK``); memory is
      O(chunk * (block_a + block_b) + block_a * block_b) per device.
    chunk: units per matmul (default 2048 on a CPU, 1024 on accelerators, where
      longer float32 GEMM sums lose digits: ``ACCEL_CHUNK``).
    mesh: a ``("data", "model")`` mesh (``rosetta_jax.sharding.make_mesh``); None:
      one device.
    compute_dtype: jnp.float32 (default) or jnp.bfloat16 for the matmul operands;
      accumulation is always float32.
    precision: the Gram dots' ``lax.Precision`` or ``lax.DotAlgorithmPreset``;
      None (default): full float32 precision (``Precision.HIGHEST``), which the
      1e-5 exactness needs on accelerators.
    names: site names used in error messages.
    moments_a, moments_b: precomputed ``Moments`` (saves a pass over the data).
    sketch: a ``SketchConfig`` to use sketch-and-rescore (see ``sketch.py``).
    progress: a tqdm bar over the panels of A's neurons when streaming from
      sources (in-memory arrays are one jitted call); with ``sketch``, bars
      over the chunks of its two host passes.

  Returns:
    A ``MatchResult``. Constant neurons (all values equal) are excluded: idx -1
    and r nan in their rows, listed in ``excluded_a``/``excluded_b``, never
    anyone's neighbour. Ties (exactly equal r): the lowest neuron index wins.
    r is within 1e-5 of a float64 computation on the same data (float32 data
    as given; float64 and integer data are centred and scaled in float64 on the
    host first: ``prep.py``), at any offset and at scales float64 holds; see
    docs/matcher.md, Exactness, for the conditions.

  Raises:
    ValueError: mismatched unit counts, NaN/inf (naming site and neuron), k < 1,
      an empty neuron axis, fewer than 2 units.
    TypeError: k not an integer; complex, object or string inputs.
  """
  k = check_k(k)
  if sketch is not None:
    from rosetta_jax.match.sketch import match_sketched
    # The candidate search on the sketch runs this kernel with these settings.
    return match_sketched(a, b, k, sketch=sketch, names=names, mesh=mesh,
                          moments_a=moments_a, moments_b=moments_b, progress=progress,
                          block_a=block_a,
                          block_b=block_b, chunk=chunk, compute_dtype=compute_dtype,
                          precision=precision)
  if mesh is None and jax.default_backend() != "cpu":
    # One host-to-device copy of float32 numpy inputs, shared by the moments
    # (computed on the device there) and the kernel.
    a, b = (jnp.asarray(x) if isinstance(x, np.ndarray) and prep._float32_like(x.dtype)
            else x for x in (a, b))
  side_a, side_b = prepare(a, b, names=names, moments_a=moments_a, moments_b=moments_b,
                           chunk=chunk or default_chunk())
  mesh = shd.make_mesh() if mesh is None else mesh
  if not (prep.is_array(side_a.data) and prep.is_array(side_b.data)):
    from rosetta_jax.match.stream import match_stream
    return match_stream(side_a, side_b, k, block_a=block_a or DEFAULT_BLOCK,
                        block_b=block_b, chunk=chunk or default_chunk(), mesh=mesh,
                        compute_dtype=compute_dtype, precision=precision,
                        desc=f"match {names[0]} ~ {names[1]}" if progress else None)
  return _match_arrays(side_a, side_b, k, block_a=block_a or default_block(),
                       block_b=block_b or default_block(), chunk=chunk or default_chunk(),
                       mesh=mesh, compute_dtype=compute_dtype, precision=precision)


def _match_arrays(side_a, side_b, k, *, block_a, block_b, chunk, mesh, compute_dtype,
                  precision=None):
  a, b = side_a.data, side_b.data
  t, na = a.shape
  nb = b.shape[1]
  nd, nm = shd.axis_size(mesh, "data"), shd.axis_size(mesh, "model")
  ba, nab = cor.split_axis(na, nm, block_a)
  bb, nbb = cor.split_axis(nb, 1, block_b)
  tc, nc = cor.split_axis(t, nd, chunk)
  nap, nbp, tp = nm * nab * ba, nbb * bb, nd * nc * tc
  put = lambda x, spec: shd.put(x, mesh, spec)
  args = [put(cor.pad_to(a, (tp, nap)), shd.ACTS_A), put(cor.pad_to(b, (tp, nbp)), shd.ACTS_B)]
  args += [put(cor.pad_to(v, (nap,)), shd.NEURONS_A) for v in (side_a.mu, side_a.lo, side_a.s)]
  args += [put(cor.pad_to(v, (nbp,)), shd.NEURONS_B) for v in (side_b.mu, side_b.lo, side_b.s)]
  ar, ai, br, bi = cor.correlate_topk(*args, mesh=mesh, k=k, ba=ba, bb=bb, tc=tc,
                                      num_units=t, compute_dtype=compute_dtype,
                                      precision=precision)
  a_idx, a_r = cor.finalize(ar, ai, na)
  b_idx, b_r = cor.finalize(br, bi, nb)
  return cor.MatchResult(a_idx, a_r, b_idx, b_r, side_a.excluded, side_b.excluded, int(t))
