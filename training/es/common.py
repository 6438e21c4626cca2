"""Pieces shared by the evolution strategies: recombination weights, sampling within
bounds, the "flat fitness" stopping rule and argument checks."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from zoo.errors import ConfigError

#: Resampling rounds for out-of-bounds solutions before the rest are clipped.
MAX_RESAMPLES = 100


def default_batch_size(dimension: int) -> int:
    """The CMA-ES default population size ``4 + floor(3 ln n)``."""
    return 4 + int(3 * math.log(dimension))


def start(
    mean: ArrayLike, sigma0: float, batch_size: int | None, name: str, *, even: bool = False
) -> tuple[Array, int, int]:
    """``(mean, n, lambda)`` of a new ES: ``mean`` as a float vector, its dimension, and the
    batch size (default :func:`default_batch_size`, rounded up to even with ``even``), all
    checked (:func:`check_init`)."""
    mean = jnp.asarray(mean)
    if not jnp.issubdtype(mean.dtype, jnp.floating):
        mean = mean.astype(jnp.zeros(()).dtype)
    n = mean.shape[0] if mean.ndim == 1 else 0
    if batch_size is None:
        batch_size = default_batch_size(max(n, 1))
        batch_size += batch_size % 2 if even else 0
    return mean, check_init(mean, sigma0, batch_size, name), batch_size


def check_init(mean: Array, sigma0: float, batch_size: int, name: str) -> int:
    """Validate ``init`` arguments; returns the dimension ``n`` of ``mean``."""
    if mean.ndim != 1 or mean.shape[0] < 1:
        raise ConfigError(
            f"{name}: mean must be one vector [n] with n >= 1, given shape {tuple(mean.shape)}; "
            "flatten pytree genomes first (models.policy.flatten_population)"
        )
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(
            f"{name}: batch_size (lambda, solutions per ask) must be an integer >= 2, given "
            f"{batch_size!r}"
        )
    if not float(sigma0) > 0:
        raise ConfigError(f"{name}: sigma0 must be a positive number, given {sigma0!r}")
    return int(mean.shape[0])


def bounds_arrays(
    lower: ArrayLike | None, upper: ArrayLike | None, n: int, dtype: jnp.dtype, name: str
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Lower and upper bounds (scalars or ``[n]``; ``None``: unbounded) as ``[n]`` arrays.

    Bounds are configuration: give Python numbers or NumPy arrays, not traced values.
    """
    try:
        low = np.broadcast_to(np.asarray(-np.inf if lower is None else lower, float), (n,))
        high = np.broadcast_to(np.asarray(np.inf if upper is None else upper, float), (n,))
    except ValueError:
        raise ConfigError(
            f"{name}: bounds must be scalars or vectors of length n={n}, given "
            f"lower={lower!r}, upper={upper!r}"
        ) from None
    if np.any(np.isnan(low)) or np.any(np.isnan(high)) or np.any(low > high):
        raise ConfigError(
            f"{name}: every lower bound must be <= its upper bound (no NaN), given "
            f"lower={lower!r}, upper={upper!r}"
        )
    return jnp.asarray(low, dtype), jnp.asarray(high, dtype)


def recombination_weights(
    num_parents: Int[ArrayLike, ""], batch_size: int, dtype: jnp.dtype
) -> tuple[Float[Array, " batch"], Float[Array, ""]]:
    """Log-decreasing weights of the ``num_parents`` best of ``batch_size`` ranked solutions.

    ``w_i = ln(mu + 1/2) - ln(i)`` for ``i = 1..mu`` normalised to sum 1, zero past ``mu``;
    ``mu_eff = 1 / sum w_i^2``. ``num_parents`` may be traced (e.g. the number of solutions
    an archive accepted); with 0 the weights are meaningless (the caller skips the update).

    Returns:
        ``(weights [batch_size], mu_eff)``.
    """
    mu = jnp.clip(jnp.asarray(num_parents), 1, batch_size)
    rank = jnp.arange(1, batch_size + 1, dtype=dtype)
    raw = jnp.log(mu.astype(dtype) + 0.5) - jnp.log(rank)
    raw = jnp.where(rank <= mu, raw, 0)
    weights = raw / jnp.sum(raw)
    mueff = jnp.sum(weights) ** 2 / jnp.sum(weights**2)
    return weights, mueff


def sample_within_bounds(
    key: PRNGKeyArray,
    sample: Callable[[PRNGKeyArray], Float[Array, "batch n"]],
    lower: Float[Array, " n"],
    upper: Float[Array, " n"],
    max_resamples: int = MAX_RESAMPLES,
) -> Float[Array, "batch n"]:
    """Draw ``sample(key)`` and redraw the rows outside ``[lower, upper]``.

    pyribs resamples until every solution lies within the bounds; here at most
    ``max_resamples`` rounds are made (a loop of static maximum length, so it can run
    jitted and vmapped) and whatever is still outside is then clipped to the bounds. With
    no bounds (+-inf) the first draw is returned as is.
    """

    def outside(x: Array) -> Array:
        return jnp.any((x < lower) | (x > upper), axis=-1)

    key, first = jax.random.split(key)
    solutions = sample(first)

    def cond(carry: tuple[Array, Array, Array]) -> Array:
        rounds, x, _ = carry
        return (rounds < max_resamples) & jnp.any(outside(x))

    def body(carry: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        rounds, x, k = carry
        k, sub = jax.random.split(k)
        fresh = sample(sub)
        return rounds + 1, jnp.where(outside(x)[:, None], fresh, x), k

    _, solutions, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), solutions, key))
    return jnp.clip(solutions, lower, upper)


def fitness_is_flat(sorted_values: Array | None) -> Array:
    """pyribs' "flat fitness" stopping rule: the best and the worst ranking values (rows of
    ``sorted_values``, in ranked order; a row may hold several values) differ by less than
    1e-12 in Euclidean norm. False without values or with fewer than two solutions."""
    if sorted_values is None or sorted_values.shape[0] < 2:
        return jnp.asarray(False)
    gap = jnp.asarray(sorted_values[0] - sorted_values[-1])
    return jnp.sqrt(jnp.sum(jnp.square(gap))) < 1e-12


def ranked(solutions: Array, ranking_indices: Int[ArrayLike, " batch"]) -> Array:
    """``solutions[ranking_indices]``: the solutions best first."""
    return jnp.take(solutions, jnp.asarray(ranking_indices), axis=0)
