"""OpenAI-ES (Salimans et al., 2017): isotropic Gaussian search, Adam on the mean.

Solutions are ``theta + sigma0 eps`` with mirrored noise (the second half of the batch is
``-eps`` of the first) and a fixed ``sigma0``. ``tell`` turns the ranking into centred
ranks ``r in [-1/2, 1/2]`` (best: 1/2) and estimates the gradient

    g = sum_i r_i eps_i / (lambda' sigma0)      (lambda' = lambda / 2 when mirrored)

then takes one Adam step (``learning_rate``, ``beta1``, ``beta2``, ``epsilon``) ascending
``g`` with L2 regularisation ``l2_coeff * theta`` added to the descent direction (not
decoupled weight decay), as pyribs 0.12's ``OpenAIEvolutionStrategy`` + ``AdamOpt``. Every
solution is used (``num_parents`` is ignored, as in pyribs). Defaults: learning rate 0.01,
L2 0.005 (the scaled CMA-MAE paper's; pyribs' own defaults are 0.001 and 0).

``tell`` recovers ``eps = (x - theta) / sigma0`` from the solutions; with exact mirroring
the sum above equals pyribs' ``sum_{i < lambda/2} eps_i (r_i - r_{i + lambda/2})``.

Bounds: pyribs refuses bounds with mirrored sampling; here out-of-bounds solutions are
clipped (no resampling, which would break the mirrored pairs), and the gradient uses the
clipped perturbations. Restart rules: last update ``|theta' - theta| / |theta'| < 1e-9`` or
flat ranking values.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from training.es import common
from zoo.errors import ConfigError


class OpenAIESState(eqx.Module):
    """OpenAI-ES state (one instance; vmap it for many).

    Attributes:
        mean: ``[n]`` ``theta``, the distribution mean.
        sigma: ``[]`` the fixed noise scale ``sigma0``.
        adam_m: ``[n]`` Adam's first moment.
        adam_v: ``[n]`` Adam's second moment.
        adam_t: ``[]`` int32, Adam steps taken.
        last_update_ratio: ``[]`` ``|theta' - theta| / |theta'|`` of the last tell (inf
            before the first).
        lower_bounds: ``[n]`` lower bounds (-inf: none).
        upper_bounds: ``[n]`` upper bounds (+inf: none).
        batch_size: ``lambda``, solutions per ask.
        mirror_sampling: whether the batch is mirrored pairs.
        learning_rate, beta1, beta2, epsilon, l2_coeff: Adam's settings.
    """

    mean: Float[Array, " n"]
    sigma: Float[Array, ""]
    adam_m: Float[Array, " n"]
    adam_v: Float[Array, " n"]
    adam_t: Int[Array, ""]
    last_update_ratio: Float[Array, ""]
    lower_bounds: Float[Array, " n"]
    upper_bounds: Float[Array, " n"]
    batch_size: int = eqx.field(static=True)
    mirror_sampling: bool = eqx.field(static=True, default=True)
    learning_rate: float = eqx.field(static=True, default=0.01)
    beta1: float = eqx.field(static=True, default=0.9)
    beta2: float = eqx.field(static=True, default=0.999)
    epsilon: float = eqx.field(static=True, default=1e-8)
    l2_coeff: float = eqx.field(static=True, default=0.005)


def init(
    mean: Float[ArrayLike, " n"],
    sigma0: float,
    *,
    batch_size: int | None = None,
    lower_bounds: ArrayLike | None = None,
    upper_bounds: ArrayLike | None = None,
    mirror_sampling: bool = True,
    learning_rate: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    l2_coeff: float = 0.005,
) -> OpenAIESState:
    """An OpenAI-ES at ``mean`` with noise scale ``sigma0`` and a fresh Adam.

    Args:
        mean: ``[n]`` initial ``theta`` (its dtype is the state's).
        sigma0: noise scale (fixed).
        batch_size: ``lambda`` (even when mirrored); default ``4 + floor(3 ln n)`` rounded
            up to even.
        lower_bounds, upper_bounds: scalars or ``[n]``; ``None`` for unbounded.
        mirror_sampling: mirrored pairs ``+-eps``.
        learning_rate, beta1, beta2, epsilon, l2_coeff: Adam's settings.

    Raises:
        ConfigError: a mean that is not a vector, ``batch_size < 2`` or odd with
            mirroring, ``sigma0 <= 0``.
    """
    mean, n, lam = common.start(mean, sigma0, batch_size, "OpenAI-ES", even=True)
    if mirror_sampling and lam % 2:
        raise ConfigError(
            f"OpenAI-ES: mirrored sampling needs an even batch_size (lambda), given {lam}; "
            "use an even number of solutions per ES or mirror_sampling=False"
        )
    dtype = mean.dtype
    low, high = common.bounds_arrays(lower_bounds, upper_bounds, n, dtype, "OpenAI-ES")
    return OpenAIESState(
        mean=mean,
        sigma=jnp.asarray(sigma0, dtype),
        adam_m=jnp.zeros(n, dtype),
        adam_v=jnp.zeros(n, dtype),
        adam_t=jnp.zeros((), jnp.int32),
        last_update_ratio=jnp.asarray(jnp.inf, dtype),
        lower_bounds=low,
        upper_bounds=high,
        batch_size=lam,
        mirror_sampling=bool(mirror_sampling),
        learning_rate=float(learning_rate),
        beta1=float(beta1),
        beta2=float(beta2),
        epsilon=float(epsilon),
        l2_coeff=float(l2_coeff),
    )


def ask(key: PRNGKeyArray, state: OpenAIESState) -> Float[Array, "batch n"]:
    """``lambda`` solutions ``theta + sigma0 eps`` (mirrored pairs), clipped to the bounds."""
    n = state.mean.shape[0]
    dtype = state.mean.dtype
    if state.mirror_sampling:
        half = jax.random.normal(key, (state.batch_size // 2, n), dtype)
        noise = jnp.concatenate([half, -half])
    else:
        noise = jax.random.normal(key, (state.batch_size, n), dtype)
    solutions = state.mean + state.sigma * noise
    return jnp.clip(solutions, state.lower_bounds, state.upper_bounds)


def tell(
    state: OpenAIESState,
    solutions: Float[Array, "batch n"],
    ranking_indices: Int[ArrayLike, " batch"],
    num_parents: Int[ArrayLike, ""] | None = None,
) -> OpenAIESState:
    """One Adam step along the centred-rank gradient estimate (``num_parents`` unused)."""
    del num_parents
    lam = state.batch_size
    dtype = state.mean.dtype
    noise = (solutions.astype(dtype) - state.mean) / state.sigma
    order = jnp.asarray(ranking_indices)
    # ranks[order[i]] = lam - 1 - i: the best gets lam - 1.
    ranks = jnp.zeros(lam, dtype).at[order[::-1]].set(jnp.arange(lam, dtype=dtype))
    ranks = ranks / (lam - 1) - 0.5
    pairs = lam // 2 if state.mirror_sampling else lam
    gradient = ranks @ noise / (pairs * state.sigma)

    descent = -gradient + state.l2_coeff * state.mean
    t = state.adam_t + 1
    step_size = (
        state.learning_rate
        * jnp.sqrt(1 - state.beta2 ** t.astype(dtype))
        / (1 - state.beta1 ** t.astype(dtype))
    )
    m = state.beta1 * state.adam_m + (1 - state.beta1) * descent
    v = state.beta2 * state.adam_v + (1 - state.beta2) * descent * descent
    mean = state.mean - step_size * m / (jnp.sqrt(v) + state.epsilon)
    ratio = jnp.linalg.norm(mean - state.mean) / jnp.linalg.norm(mean)
    return eqx.tree_at(
        lambda s: (s.mean, s.adam_m, s.adam_v, s.adam_t, s.last_update_ratio),
        state,
        (mean, m, v, t, ratio),
    )


def should_restart(state: OpenAIESState, sorted_values: Array | None = None) -> Array:
    """pyribs' OpenAI-ES stopping rules after a ``tell``: last update ratio < 1e-9 or flat
    ranking values (``sorted_values`` in ranked order; ``None`` skips that rule)."""
    return (state.last_update_ratio < 1e-9) | common.fitness_is_flat(sorted_values)
