"""LM-MA-ES (Loshchilov, Glasmachers & Beyer, 2018): limited-memory matrix adaptation.

The covariance is represented implicitly by ``k`` direction vectors ``m_j`` (``k = lambda``
by default): a standard normal ``z`` becomes the step
``d = A_{k'-1} ... A_0 z`` with ``A_j = (1 - c_d,j) I + c_d,j m_j m_j^T``, applied for the
first ``k' = min(generation, k)`` vectors, and a solution is ``x = m + sigma d``. Cost per
solution O(k n). After ranking, with log weights ``w`` over the ``mu`` best::

    z_w   = sum_i w_i z_i                 m' = sum_i w_i x_i
    p_s   = (1 - c_s) p_s + sqrt(mu_eff c_s (2 - c_s)) z_w
    m_j   = (1 - c_c,j) m_j + sqrt(mu_eff c_c,j (2 - c_c,j)) z_w
    sigma = sigma exp(c_s / 2 (|p_s|^2 / n - 1))

with ``c_s = 2 lambda / n``, ``c_d,j = 1 / (1.5^j n)`` and ``c_c,j = lambda / (4^j n)``
(``j = 0..k-1``), and no mirrored sampling, as pyribs 0.12's ``LMMAEvolutionStrategy``.

``tell`` receives solutions, not the ``z`` they were drawn from: it recovers each ``z``
by inverting the ``A_j`` (Sherman-Morrison, in reverse order), which is exact up to
rounding and also gives the ``z`` of a clipped solution. (The recovered ``z`` loses
precision once ``sigma`` falls below about ``eps * |m|``, ``eps`` the float resolution;
the solutions themselves cannot resolve such steps either.)

Bounds: resampling (at most :data:`common.MAX_RESAMPLES` rounds), then clipping.
Restart rules: ``sigma < 1e-12`` or flat ranking values.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from training.es import common
from zoo.errors import ConfigError


class LMMAESState(eqx.Module):
    """LM-MA-ES state (one instance; vmap it for many).

    Attributes:
        mean: ``[n]`` distribution mean.
        sigma: ``[]`` step size.
        ps: ``[n]`` step-size evolution path.
        directions: ``[k, n]`` the vectors ``m_j``.
        generation: ``[]`` int32, tells so far.
        lower_bounds: ``[n]`` lower bounds (-inf: none).
        upper_bounds: ``[n]`` upper bounds (+inf: none).
        batch_size: ``lambda``, solutions per ask.
    """

    mean: Float[Array, " n"]
    sigma: Float[Array, ""]
    ps: Float[Array, " n"]
    directions: Float[Array, "k n"]
    generation: Int[Array, ""]
    lower_bounds: Float[Array, " n"]
    upper_bounds: Float[Array, " n"]
    batch_size: int = eqx.field(static=True)

    @property
    def num_vectors(self) -> int:
        return self.directions.shape[0]

    @property
    def csigma(self) -> float:
        return 2 * self.batch_size / self.mean.shape[0]

    def rates(self) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
        """``(c_d, c_c)``, one rate per direction vector."""
        n = self.mean.shape[0]
        j = jnp.arange(self.num_vectors, dtype=self.mean.dtype)
        return 1 / (1.5**j * n), self.batch_size / (4.0**j * n)


def init(
    mean: Float[ArrayLike, " n"],
    sigma0: float,
    *,
    batch_size: int | None = None,
    lower_bounds: ArrayLike | None = None,
    upper_bounds: ArrayLike | None = None,
    num_vectors: int | None = None,
) -> LMMAESState:
    """An LM-MA-ES centred on ``mean`` with step size ``sigma0``.

    Args:
        mean: ``[n]`` initial mean (its dtype is the state's).
        sigma0: initial step size.
        batch_size: ``lambda``, below ``n`` (``c_s = 2 lambda / n``; pyribs also allows
            ``lambda = n``, where the step size can only shrink); default
            ``4 + floor(3 ln n)``.
        lower_bounds, upper_bounds: scalars or ``[n]``; ``None`` for unbounded.
        num_vectors: ``k``; default ``lambda``.

    Raises:
        ConfigError: a mean that is not a vector, ``batch_size < 2`` or ``>= n``,
            ``sigma0 <= 0`` or ``num_vectors < 1``.
    """
    mean, n, lam = common.start(mean, sigma0, batch_size, "LM-MA-ES")
    if lam >= n:
        raise ConfigError(
            f"LM-MA-ES: batch_size (lambda) must be smaller than the dimension n={n} (its "
            f"step-size rate is 2 lambda / n; at lambda = n the step-size path stays 0 and "
            f"sigma only shrinks), given {lam}; use fewer solutions per ES (more ES "
            "instances) or another ES"
        )
    k = lam if num_vectors is None else int(num_vectors)
    if k < 1:
        raise ConfigError(f"LM-MA-ES: num_vectors must be >= 1, given {num_vectors!r}")
    dtype = mean.dtype
    low, high = common.bounds_arrays(lower_bounds, upper_bounds, n, dtype, "LM-MA-ES")
    return LMMAESState(
        mean=mean,
        sigma=jnp.asarray(sigma0, dtype),
        ps=jnp.zeros(n, dtype),
        directions=jnp.zeros((k, n), dtype),
        generation=jnp.zeros((), jnp.int32),
        lower_bounds=low,
        upper_bounds=high,
        batch_size=lam,
    )


def _transform(state: LMMAESState, z: Float[Array, "batch n"]) -> Float[Array, "batch n"]:
    """``d = A_{k'-1} ... A_0 z`` for the first ``k' = min(generation, k)`` vectors."""
    cd, _ = state.rates()

    def apply(j: int, d: Array) -> Array:
        m = state.directions[j]
        new = (1 - cd[j]) * d + cd[j] * (d @ m)[:, None] * m
        return jnp.where(j < state.generation, new, d)

    return jax.lax.fori_loop(0, state.num_vectors, apply, z)


def _untransform(state: LMMAESState, d: Float[Array, "batch n"]) -> Float[Array, "batch n"]:
    """Inverse of :func:`_transform`: ``A_j^-1 v = (v - c m (m.v) / (1 - c + c |m|^2)) /
    (1 - c)`` with ``c = c_d,j``, for ``j = k'-1 .. 0``."""
    cd, _ = state.rates()
    k = state.num_vectors

    def apply(i: int, v: Array) -> Array:
        j = k - 1 - i
        m = state.directions[j]
        c = cd[j]
        denominator = 1 - c + c * jnp.sum(m * m)
        new = (v - c * (v @ m)[:, None] * m / denominator) / (1 - c)
        return jnp.where(j < state.generation, new, v)

    return jax.lax.fori_loop(0, k, apply, d)


def ask(key: PRNGKeyArray, state: LMMAESState) -> Float[Array, "batch n"]:
    """``lambda`` solutions ``m + sigma A z`` with ``z ~ N(0, I)`` (no mirroring)."""
    n = state.mean.shape[0]

    def sample(k: PRNGKeyArray) -> Array:
        z = jax.random.normal(k, (state.batch_size, n), state.mean.dtype)
        return state.mean + state.sigma * _transform(state, z)

    return common.sample_within_bounds(key, sample, state.lower_bounds, state.upper_bounds)


def tell(
    state: LMMAESState,
    solutions: Float[Array, "batch n"],
    ranking_indices: Int[ArrayLike, " batch"],
    num_parents: Int[ArrayLike, ""],
) -> LMMAESState:
    """Update from the last ask's ``solutions`` ranked by ``ranking_indices`` (best first),
    recombining the ``num_parents`` best (0: only the generation counter moves)."""
    n = state.mean.shape[0]
    dtype = state.mean.dtype
    parents = common.ranked(solutions.astype(dtype), ranking_indices)
    # A step size that underflowed to 0 gives z = 0 rather than 0 / 0.
    scale = jnp.maximum(state.sigma, jnp.finfo(dtype).tiny)
    z = _untransform(state, (parents - state.mean) / scale)
    weights, mueff = common.recombination_weights(num_parents, state.batch_size, dtype)
    z_mean = weights @ z
    mean = weights @ parents
    cs = state.csigma
    _, cc = state.rates()
    ps = (1 - cs) * state.ps + jnp.sqrt(mueff * cs * (2 - cs)) * z_mean
    directions = (1 - cc[:, None]) * state.directions + jnp.sqrt(
        mueff * cc[:, None] * (2 - cc[:, None])
    ) * z_mean[None]
    sigma = state.sigma * jnp.exp(cs / 2 * (jnp.sum(ps**2) / n - 1))

    update = jnp.asarray(num_parents) > 0
    keep = lambda new, old: jnp.where(update, new, old)  # noqa: E731
    return eqx.tree_at(
        lambda t: (t.mean, t.sigma, t.ps, t.directions, t.generation),
        state,
        (
            keep(mean, state.mean),
            keep(sigma, state.sigma),
            keep(ps, state.ps),
            keep(directions, state.directions),
            state.generation + 1,
        ),
    )


def should_restart(state: LMMAESState, sorted_values: Array | None = None) -> Array:
    """pyribs' LM-MA-ES stopping rules after a ``tell``: ``sigma < 1e-12`` or flat ranking
    values (``sorted_values`` in ranked order; ``None`` skips that rule)."""
    return (state.sigma < 1e-12) | common.fitness_is_flat(sorted_values)
