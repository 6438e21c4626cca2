"""CMA-ES (Hansen & Ostermeier, 2001; Hansen, 2016): full covariance, O(n^2) per sample.

Solutions are drawn from ``N(mean, sigma^2 C)``. ``tell`` takes the solutions of the last
``ask`` ranked best first and the number ``mu`` of parents (``mu`` may be traced, e.g. the
number of solutions an archive accepted; with 0 only the evaluation counter moves), and
updates, with log weights ``w`` over the ``mu`` best and ``y_i = x_i - m``::

    m'    = sum_i w_i x_i
    p_s   = (1 - c_s) p_s + sqrt(c_s (2 - c_s) mu_eff) C^(-1/2) (m' - m) / sigma
    h_s   = |p_s|^2 / n / (1 - (1 - c_s)^(2 evals / lambda)) < 2 + 4 / (n + 1)
    p_c   = (1 - c_c) p_c + h_s sqrt(c_c (2 - c_c) mu_eff) (m' - m) / sigma
    C'    = (1 - c1a - c_mu sum w) C + c_1 p_c p_c^T + c_mu sum_i w_i y_i y_i^T / sigma^2
    sigma = sigma exp(min(1, c_s / d_s (|p_s|^2 / n - 1) / 2))

with ``c1a = c_1 (1 - (1 - h_s) c_c (2 - c_c))`` and pycma's default rates. The step-size
rule is the one of pycma's ``purecma`` (squared norm of ``p_s`` against ``n``), as pyribs
uses. The eigendecomposition of ``C`` (for sampling and ``C^(-1/2)``) is refreshed lazily,
once ``0.5 n lambda / ((c_1 + c_mu) n^2)`` evaluations have passed since the last one, as
pyribs 0.12 (``ribs.emitters.opt.CMAEvolutionStrategy``) does.

The rank-one term. pyribs 0.12 (and the CMA-MAE paper code) accumulates ``p_c`` from
``m' - m`` *without* dividing by ``sigma`` and adds ``c_1 * (c_1 p_c p_c^T)``: the rank-one
update is effectively scaled by ``c_1 sigma^2``, i.e. switched off. The default here is the
textbook update above; ``pyribs_rank_one=True`` reproduces pyribs exactly (both the missing
``1 / sigma`` in ``p_c`` and the ``c_1^2``) for comparisons with published pyribs runs.

Bounds: out-of-bounds solutions are resampled (at most :data:`common.MAX_RESAMPLES`
rounds) and what remains outside is clipped; pyribs resamples without limit.

Restart rules (:func:`should_restart`, pyribs' defaults from pycma): condition number of
``C`` above 1e14, ``sigma * sqrt(max eig C) < 1e-11``, or flat ranking values.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from training.es import common


class CMAESState(eqx.Module):
    """CMA-ES state (one instance; vmap it for many).

    Attributes:
        mean: ``[n]`` distribution mean.
        sigma: ``[]`` step size.
        pc: ``[n]`` covariance evolution path.
        ps: ``[n]`` step-size evolution path.
        cov: ``[n, n]`` covariance matrix ``C``.
        eigenbasis: ``[n, n]`` eigenvectors of ``C`` at the last refresh (columns).
        eigenvalues: ``[n]`` eigenvalues of ``C`` at the last refresh.
        invsqrt: ``[n, n]`` ``C^(-1/2)`` at the last refresh.
        condition: ``[]`` condition number of the decomposition the last ``tell`` used.
        max_eigenvalue: ``[]`` largest eigenvalue of that decomposition.
        current_eval: ``[]`` solutions told so far.
        updated_eval: ``[]`` value of ``current_eval`` at the last refresh.
        lower_bounds: ``[n]`` lower bounds (-inf: none).
        upper_bounds: ``[n]`` upper bounds (+inf: none).
        batch_size: ``lambda``, solutions per ask.
        lazy_gap_evals: evaluations between two eigendecompositions.
        pyribs_rank_one: reproduce pyribs' rank-one update (see the module docstring).
    """

    mean: Float[Array, " n"]
    sigma: Float[Array, ""]
    pc: Float[Array, " n"]
    ps: Float[Array, " n"]
    cov: Float[Array, "n n"]
    eigenbasis: Float[Array, "n n"]
    eigenvalues: Float[Array, " n"]
    invsqrt: Float[Array, "n n"]
    condition: Float[Array, ""]
    max_eigenvalue: Float[Array, ""]
    current_eval: Float[Array, ""]
    updated_eval: Float[Array, ""]
    lower_bounds: Float[Array, " n"]
    upper_bounds: Float[Array, " n"]
    batch_size: int = eqx.field(static=True)
    lazy_gap_evals: float = eqx.field(static=True)
    pyribs_rank_one: bool = eqx.field(static=True, default=False)


def _rates(mueff: Array | float, n: int) -> tuple[Array, Array, Array, Array]:
    """``(c_c, c_s, c_1, c_mu)`` of CMA-ES for ``mu_eff`` in dimension ``n``."""
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    cs = (mueff + 2) / (n + mueff + 5)
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = jnp.minimum(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    return cc, cs, c1, cmu


def init(
    mean: Float[ArrayLike, " n"],
    sigma0: float,
    *,
    batch_size: int | None = None,
    lower_bounds: ArrayLike | None = None,
    upper_bounds: ArrayLike | None = None,
    pyribs_rank_one: bool = False,
) -> CMAESState:
    """A CMA-ES centred on ``mean`` with step size ``sigma0`` and ``C = I``.

    Args:
        mean: ``[n]`` initial mean (its dtype is the state's).
        sigma0: initial step size.
        batch_size: ``lambda``; default ``4 + floor(3 ln n)``.
        lower_bounds, upper_bounds: scalars or ``[n]``; ``None`` for unbounded.
        pyribs_rank_one: reproduce pyribs 0.12's rank-one update exactly.

    Raises:
        ConfigError: a mean that is not a vector, ``batch_size < 2`` or ``sigma0 <= 0``.
    """
    mean, n, lam = common.start(mean, sigma0, batch_size, "CMA-ES")
    dtype = mean.dtype
    mu = lam // 2
    raw = [math.log(mu + 0.5) - math.log(i) for i in range(1, mu + 1)]
    mueff0 = sum(raw) ** 2 / sum(r * r for r in raw)
    c1 = 2 / ((n + 1.3) ** 2 + mueff0)
    cmu = min(1 - c1, 2 * (mueff0 - 2 + 1 / mueff0) / ((n + 2) ** 2 + mueff0))
    lazy_gap = 0.5 * n * lam / (c1 + cmu) / n**2
    low, high = common.bounds_arrays(lower_bounds, upper_bounds, n, dtype, "CMA-ES")
    eye = jnp.eye(n, dtype=dtype)
    zero = jnp.zeros((), dtype)
    return CMAESState(
        mean=mean,
        sigma=jnp.asarray(sigma0, dtype),
        pc=jnp.zeros(n, dtype),
        ps=jnp.zeros(n, dtype),
        cov=eye,
        eigenbasis=eye,
        eigenvalues=jnp.ones(n, dtype),
        invsqrt=eye,
        condition=jnp.ones((), dtype),
        max_eigenvalue=jnp.ones((), dtype),
        current_eval=zero,
        updated_eval=zero,
        lower_bounds=low,
        upper_bounds=high,
        batch_size=lam,
        lazy_gap_evals=float(lazy_gap),
        pyribs_rank_one=bool(pyribs_rank_one),
    )


def ask(key: PRNGKeyArray, state: CMAESState) -> Float[Array, "batch n"]:
    """``lambda`` solutions from ``N(mean, sigma^2 C)`` (with the last decomposition)."""
    n = state.mean.shape[0]
    transform = state.eigenbasis * jnp.sqrt(state.eigenvalues)

    def sample(k: PRNGKeyArray) -> Array:
        unscaled = state.sigma * jax.random.normal(k, (state.batch_size, n), state.mean.dtype)
        return state.mean + unscaled @ transform.T

    return common.sample_within_bounds(key, sample, state.lower_bounds, state.upper_bounds)


@jax.custom_batching.custom_vmap
def _eigh(matrix: Float[Array, "n n"]) -> tuple[Float[Array, " n"], Float[Array, "n n"]]:
    """``jnp.linalg.eigh`` that stays unbatched under ``vmap`` (see :func:`_eigh_vmap`)."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
    return eigenvalues, eigenvectors


@_eigh.def_vmap
def _eigh_vmap(
    axis_size: int, in_batched: list[bool], matrix: Array
) -> tuple[tuple[Array, Array], tuple[bool, bool]]:
    """Vmapped instances decompose their matrices one after another (``lax.map``).

    jaxlib's batched CPU eigendecomposition splits the batch over the host thread pool and
    can deadlock when several host devices run it at once (the CLI's
    ``--xla_force_host_platform_device_count``, jax 0.10); one matrix per call avoids it.
    """
    del axis_size
    if not in_batched[0]:
        return _eigh(matrix), (False, False)
    return jax.lax.map(_eigh, matrix), (True, True)


def _refresh(state: CMAESState) -> CMAESState:
    """Recompute the eigendecomposition if ``lazy_gap_evals`` evaluations have passed."""

    def decompose(s: CMAESState) -> CMAESState:
        cov = jnp.maximum(s.cov, s.cov.T)
        eigenvalues, eigenbasis = _eigh(cov)
        eigenvalues = jnp.abs(eigenvalues)
        invsqrt = (eigenbasis * (1 / jnp.sqrt(eigenvalues))) @ eigenbasis.T
        return eqx.tree_at(
            lambda t: (t.cov, t.eigenbasis, t.eigenvalues, t.invsqrt, t.updated_eval),
            s,
            (cov, eigenbasis, eigenvalues, jnp.maximum(invsqrt, invsqrt.T), s.current_eval),
        )

    due = state.current_eval > state.updated_eval + state.lazy_gap_evals
    return jax.lax.cond(due, decompose, lambda s: s, state)


def tell(
    state: CMAESState,
    solutions: Float[Array, "batch n"],
    ranking_indices: Int[ArrayLike, " batch"],
    num_parents: Int[ArrayLike, ""],
) -> CMAESState:
    """Update from the last ask's ``solutions`` ranked by ``ranking_indices`` (best first:
    ``solutions[ranking_indices]`` is sorted), recombining the ``num_parents`` best."""
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
    ps = (1 - cs) * state.ps + (jnp.sqrt(cs * (2 - cs) * mueff) / state.sigma) * (state.invsqrt @ y)
    squared_ps = jnp.sum(jnp.square(ps))
    left = squared_ps / n / (1 - (1 - cs) ** (2 * current_eval / lam))
    hsig = (left < 2 + 4.0 / (n + 1)).astype(dtype)
    step = y if state.pyribs_rank_one else y / state.sigma
    pc = (1 - cc) * state.pc + hsig * jnp.sqrt(cc * (2 - cc) * mueff) * step

    ys = parents - old_mean
    rank_mu = (ys * weights[:, None]).T @ ys
    c1a = c1 * (1 - (1 - hsig**2) * cc * (2 - cc))
    rank_one = (c1 * c1 if state.pyribs_rank_one else c1) * jnp.outer(pc, pc)
    cov = state.cov * (1 - c1a - cmu * jnp.sum(weights)) + rank_one + rank_mu * cmu / state.sigma**2
    sigma = state.sigma * jnp.exp(jnp.minimum(1, cs / damps * (squared_ps / n - 1) / 2))

    update = jnp.asarray(num_parents) > 0
    keep = lambda new, old: jnp.where(update, new, old)  # noqa: E731
    told = eqx.tree_at(
        lambda t: (t.mean, t.sigma, t.pc, t.ps, t.cov, t.current_eval, t.condition,
                   t.max_eigenvalue),
        state,
        (
            keep(mean, state.mean),
            keep(sigma, state.sigma),
            keep(pc, state.pc),
            keep(ps, state.ps),
            keep(cov, state.cov),
            current_eval,
            jnp.max(state.eigenvalues) / jnp.min(state.eigenvalues),
            jnp.max(state.eigenvalues),
        ),
    )  # fmt: skip
    return _refresh(told)


def should_restart(state: CMAESState, sorted_values: Array | None = None) -> Array:
    """pyribs' CMA-ES stopping rules (from pycma) after a ``tell``.

    Args:
        state: the state after ``tell``.
        sorted_values: the ranking values in ranked order (``[batch]`` or
            ``[batch, k]``) for the flat-fitness rule; ``None`` skips that rule.

    Returns:
        ``[]`` bool: condition number > 1e14, ``sigma * sqrt(max eigenvalue) < 1e-11``, or
        the best and worst ranking values within 1e-12.
    """
    area = state.sigma * jnp.sqrt(state.max_eigenvalue)
    return (state.condition > 1e14) | (area < 1e-11) | common.fitness_is_flat(sorted_values)
