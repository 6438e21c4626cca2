"""sep-CMA-ES (Ros & Hansen, 2008): CMA-ES with a diagonal covariance, O(n) per sample.

Same update as :mod:`training.es.cma_es` with ``C = diag(c)``: the rank-one and rank-mu
terms keep only their diagonals (``p_c^2``, ``sum_i w_i y_i^2``) and the learning rates are
pycma's separable ones (as pyribs 0.12's ``SeparableCMAEvolutionStrategy``)::

    c_c   = (1 + 1/n + mu_eff/n) / (sqrt(n) + 1/n + 2 mu_eff/n)
    c_1   = 2 / ((n + 1.3)^2 + mu_eff) / (n + 2 sqrt(n) + mu_eff/n)
    c_mu  = min(1 - c_1, (mu_eff + 1/mu_eff - 2) / (n + 4 sqrt(n) + mu_eff/2))

``c_s`` and the damping are those of CMA-ES. No eigendecomposition is needed.

The rank-one term: as in :mod:`training.es.cma_es`, the default is the textbook
``c_1 p_c^2`` with ``p_c`` accumulated from ``(m' - m) / sigma``; ``pyribs_rank_one=True``
reproduces pyribs (``p_c`` from ``m' - m`` and ``c_1^2 p_c^2``).

Bounds: resampling (at most :data:`common.MAX_RESAMPLES` rounds), then clipping.
Restart rules: condition number ``max c / min c > 1e14``,
``sigma * sqrt(max c) < 1e-11``, or flat ranking values.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from training.es import common


class SepCMAESState(eqx.Module):
    """sep-CMA-ES state (one instance; vmap it for many).

    Attributes:
        mean: ``[n]`` distribution mean.
        sigma: ``[]`` step size.
        pc: ``[n]`` covariance evolution path.
        ps: ``[n]`` step-size evolution path.
        cov: ``[n]`` diagonal of the covariance matrix.
        current_eval: ``[]`` solutions told so far.
        lower_bounds: ``[n]`` lower bounds (-inf: none).
        upper_bounds: ``[n]`` upper bounds (+inf: none).
        batch_size: ``lambda``, solutions per ask.
        pyribs_rank_one: reproduce pyribs' rank-one update.
    """

    mean: Float[Array, " n"]
    sigma: Float[Array, ""]
    pc: Float[Array, " n"]
    ps: Float[Array, " n"]
    cov: Float[Array, " n"]
    current_eval: Float[Array, ""]
    lower_bounds: Float[Array, " n"]
    upper_bounds: Float[Array, " n"]
    batch_size: int = eqx.field(static=True)
    pyribs_rank_one: bool = eqx.field(static=True, default=False)


def _rates(mueff: Array, n: int) -> tuple[Array, Array, Array, Array]:
    """``(c_c, c_s, c_1, c_mu)`` of sep-CMA-ES (pycma's separable rates)."""
    cc = (1 + 1 / n + mueff / n) / (n**0.5 + 1 / n + 2 * mueff / n)
    cs = (mueff + 2) / (n + mueff + 5)
    c1 = 2 / ((n + 1.3) ** 2 + mueff) / (n + 2 * math.sqrt(n) + mueff / n)
    cmu = jnp.minimum(1 - c1, (mueff + 1 / mueff - 2) / (n + 4 * math.sqrt(n) + mueff / 2.0))
    return cc, cs, c1, cmu


def init(
    mean: Float[ArrayLike, " n"],
    sigma0: float,
    *,
    batch_size: int | None = None,
    lower_bounds: ArrayLike | None = None,
    upper_bounds: ArrayLike | None = None,
    pyribs_rank_one: bool = False,
) -> SepCMAESState:
    """A sep-CMA-ES centred on ``mean`` with step size ``sigma0`` and ``C = I``.

    Args: as :func:`training.es.cma_es.init`.

    Raises:
        ConfigError: a mean that is not a vector, ``batch_size < 2`` or ``sigma0 <= 0``.
    """
    mean, n, lam = common.start(mean, sigma0, batch_size, "sep-CMA-ES")
    dtype = mean.dtype
    low, high = common.bounds_arrays(lower_bounds, upper_bounds, n, dtype, "sep-CMA-ES")
    return SepCMAESState(
        mean=mean,
        sigma=jnp.asarray(sigma0, dtype),
        pc=jnp.zeros(n, dtype),
        ps=jnp.zeros(n, dtype),
        cov=jnp.ones(n, dtype),
        current_eval=jnp.zeros((), dtype),
        lower_bounds=low,
        upper_bounds=high,
        batch_size=lam,
        pyribs_rank_one=bool(pyribs_rank_one),
    )


def ask(key: PRNGKeyArray, state: SepCMAESState) -> Float[Array, "batch n"]:
    """``lambda`` solutions from ``N(mean, sigma^2 diag(c))``."""
    n = state.mean.shape[0]
    scale = jnp.sqrt(state.cov)

    def sample(k: PRNGKeyArray) -> Array:
        unscaled = state.sigma * jax.random.normal(k, (state.batch_size, n), state.mean.dtype)
        return state.mean + unscaled * scale

    return common.sample_within_bounds(key, sample, state.lower_bounds, state.upper_bounds)


def tell(
    state: SepCMAESState,
    solutions: Float[Array, "batch n"],
    ranking_indices: Int[ArrayLike, " batch"],
    num_parents: Int[ArrayLike, ""],
) -> SepCMAESState:
    """Update from the last ask's ``solutions`` ranked by ``ranking_indices`` (best first),
    recombining the ``num_parents`` best (0: only the evaluation counter moves)."""
    n = state.mean.shape[0]
    lam = state.batch_size
    dtype = state.mean.dtype
    current_eval = state.current_eval + lam
    parents = common.ranked(solutions.astype(dtype), ranking_indices)
    weights, mueff = common.recombination_weights(num_parents, lam, dtype)
    cc, cs, c1, cmu = _rates(mueff, n)
    damps = 1 + 2 * jnp.maximum(0, jnp.sqrt((mueff - 1) / (n + 1)) - 1) + cs

    old_mean = state.mean
    mean = weights @ parents
    y = mean - old_mean
    ps = (1 - cs) * state.ps + (jnp.sqrt(cs * (2 - cs) * mueff) / state.sigma) * (
        y / jnp.sqrt(state.cov)
    )
    squared_ps = jnp.sum(jnp.square(ps))
    left = squared_ps / n / (1 - (1 - cs) ** (2 * current_eval / lam))
    hsig = (left < 2 + 4.0 / (n + 1)).astype(dtype)
    step = y if state.pyribs_rank_one else y / state.sigma
    pc = (1 - cc) * state.pc + hsig * jnp.sqrt(cc * (2 - cc) * mueff) * step

    ys = parents - old_mean
    rank_mu = jnp.sum(weights[:, None] * ys * ys, axis=0)
    c1a = c1 * (1 - (1 - hsig**2) * cc * (2 - cc))
    rank_one = (c1 * c1 if state.pyribs_rank_one else c1) * pc**2
    cov = state.cov * (1 - c1a - cmu * jnp.sum(weights)) + rank_one + rank_mu * cmu / state.sigma**2
    sigma = state.sigma * jnp.exp(jnp.minimum(1, cs / damps * (squared_ps / n - 1) / 2))

    update = jnp.asarray(num_parents) > 0
    keep = lambda new, old: jnp.where(update, new, old)  # noqa: E731
    return eqx.tree_at(
        lambda t: (t.mean, t.sigma, t.pc, t.ps, t.cov, t.current_eval),
        state,
        (
            keep(mean, state.mean),
            keep(sigma, state.sigma),
            keep(pc, state.pc),
            keep(ps, state.ps),
            keep(cov, state.cov),
            current_eval,
        ),
    )


def should_restart(state: SepCMAESState, sorted_values: Array | None = None) -> Array:
    """pyribs' sep-CMA-ES stopping rules after a ``tell``: condition number of ``diag(c)``
    > 1e14, ``sigma * sqrt(max c) < 1e-11``, or flat ranking values (``sorted_values`` in
    ranked order; ``None`` skips that rule)."""
    condition = jnp.max(state.cov) / jnp.min(state.cov)
    area = state.sigma * jnp.sqrt(jnp.max(state.cov))
    return (condition > 1e14) | (area < 1e-11) | common.fitness_is_flat(sorted_values)
