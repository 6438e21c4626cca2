"""The evolution strategies of training/es: the same updates as pyribs 0.12 on injected
solutions and rankings (float64), the textbook rank-one term, minimising a sphere (jitted
and vmapped), restart rules, bounds and argument checks."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numba
import numpy as np
import pytest

from training.es import BACKENDS, cma_es, common, lm_ma_es, openai_es, sep_cma_es
from zoo.errors import ConfigError

# pyribs' ES helpers as plain NumPy (no numba compilation for these tiny sizes); only the
# ES optimisers of pyribs use numba.
_NUMBA_DISABLED = numba.config.DISABLE_JIT
numba.config.DISABLE_JIT = True
from ribs.emitters.opt import (  # noqa: E402
    CMAEvolutionStrategy,
    LMMAEvolutionStrategy,
    OpenAIEvolutionStrategy,
    SeparableCMAEvolutionStrategy,
)

numba.config.DISABLE_JIT = _NUMBA_DISABLED

N, LAMBDA, SIGMA0 = 12, 6, 0.3

PYRIBS: dict[str, tuple[type, ModuleType, dict[str, Any], dict[str, Any]]] = {
    # name: (pyribs class, our module, pyribs kwargs, our init kwargs)
    "cma": (CMAEvolutionStrategy, cma_es, {}, {"pyribs_rank_one": True}),
    "sep-cma": (SeparableCMAEvolutionStrategy, sep_cma_es, {}, {"pyribs_rank_one": True}),
    "lm-ma": (LMMAEvolutionStrategy, lm_ma_es, {}, {}),
    "openai": (OpenAIEvolutionStrategy, openai_es, {"lr": 0.01, "l2_coeff": 0.005}, {}),
}


def _sphere(x: Any) -> Any:
    return ((x - 1.5) ** 2).sum(-1)


@pytest.mark.parametrize("name", list(PYRIBS))
def test_update_matches_pyribs(name: str) -> None:
    """Same solutions, rankings and parent counts (0, fewer than mu, mu, lambda) given to
    pyribs and to ours: same mean, step size, paths and covariance (or its factor)."""
    cls, module, ribs_kwargs, our_kwargs = PYRIBS[name]
    x0 = np.linspace(-1.0, 1.0, N)
    ref = cls(SIGMA0, N, batch_size=LAMBDA, seed=0, dtype=np.float64, **ribs_kwargs)
    ref.reset(x0)
    with jax.enable_x64(True):
        state = module.init(jnp.asarray(x0), SIGMA0, batch_size=LAMBDA, **our_kwargs)
        tell = jax.jit(module.tell)
        for step in range(10):
            solutions = np.array(ref.ask())
            order = np.argsort(_sphere(solutions))
            num_parents = [LAMBDA // 2, 3, 0, LAMBDA][step % 4]
            ref.tell(order, -_sphere(solutions)[order], num_parents)
            state = tell(state, jnp.asarray(solutions), jnp.asarray(order), num_parents)
            if name == "openai":
                np.testing.assert_allclose(state.mean, ref.adam_opt.theta, rtol=0, atol=1e-12)
                np.testing.assert_allclose(state.last_update_ratio, ref.last_update_ratio)
                continue
            np.testing.assert_allclose(state.mean, ref.mean, rtol=0, atol=1e-12)
            np.testing.assert_allclose(state.sigma, ref.sigma, rtol=1e-12)
            np.testing.assert_allclose(state.ps, ref.ps, rtol=0, atol=1e-10)
            if name == "lm-ma":
                np.testing.assert_allclose(state.directions, ref.m, rtol=0, atol=1e-8)
            else:
                np.testing.assert_allclose(state.pc, ref.pc, rtol=0, atol=1e-12)
                np.testing.assert_allclose(state.cov, ref.cov.cov, rtol=0, atol=1e-12)
            if name == "cma":
                # The lazily refreshed decomposition the next ask samples with.
                ref.cov.update_eigensystem(ref.current_eval, ref.lazy_gap_evals)
                np.testing.assert_allclose(state.invsqrt, ref.cov.invsqrt, atol=1e-10)
                np.testing.assert_allclose(state.updated_eval, ref.cov.updated_eval)
        values = -_sphere(solutions)[order]
        assert bool(module.should_restart(state, jnp.asarray(values))) == ref.check_stop(values)


@pytest.mark.parametrize("module", [cma_es, sep_cma_es], ids=["cma", "sep-cma"])
def test_textbook_rank_one_term(module: ModuleType) -> None:
    """Default: p_c from (m' - m) / sigma and c_1 p_c p_c^T; pyribs: p_c from m' - m and
    c_1^2 p_c p_c^T. Everything else is the same."""
    sigma0 = 0.5
    with jax.enable_x64(True):
        textbook = module.init(jnp.zeros(N), sigma0, batch_size=LAMBDA)
        pyribs = module.init(jnp.zeros(N), sigma0, batch_size=LAMBDA, pyribs_rank_one=True)
        solutions = jax.jit(module.ask)(jax.random.key(0), textbook)
        order = jnp.argsort(_sphere(solutions))
        tell = jax.jit(module.tell, static_argnums=3)
        textbook = tell(textbook, solutions, order, LAMBDA // 2)
        pyribs = tell(pyribs, solutions, order, LAMBDA // 2)
        for field in ("mean", "sigma", "ps"):
            np.testing.assert_allclose(getattr(textbook, field), getattr(pyribs, field))
        np.testing.assert_allclose(textbook.pc, pyribs.pc / sigma0, rtol=1e-12)
        _, mueff = common.recombination_weights(LAMBDA // 2, LAMBDA, jnp.float64)
        _, _, c1, _ = module._rates(mueff, N)
        outer = jnp.outer(textbook.pc, textbook.pc) if module is cma_es else textbook.pc**2
        expected = (c1 - c1**2 * sigma0**2) * outer
        np.testing.assert_allclose(textbook.cov - pyribs.cov, expected, rtol=1e-9, atol=1e-15)
        assert float(jnp.max(jnp.abs(expected))) > 1e-4  # the difference is not negligible


def _minimise(module: ModuleType, key: Any, mean: Any, sigma0: float, steps: int, **kw: Any):
    state = module.init(mean, sigma0, batch_size=LAMBDA, **kw)

    def step(state: Any, key: Any) -> tuple[Any, Any]:
        solutions = module.ask(key, state)
        order = jnp.argsort(_sphere(solutions))
        return module.tell(state, solutions, order, LAMBDA // 2), None

    state, _ = jax.lax.scan(step, state, jax.random.split(key, steps))
    return state


@pytest.mark.parametrize(
    ("name", "sigma0", "steps", "tolerance", "kwargs"),
    [
        ("cma", 0.5, 250, 1e-8, {}),
        ("sep-cma", 0.5, 250, 1e-8, {}),
        ("lm-ma", 0.5, 300, 1e-6, {}),
        ("openai", 0.05, 400, 2e-2, {"l2_coeff": 0.0, "learning_rate": 0.05}),
    ],
)
def test_minimises_a_sphere_vmapped(
    name: str, sigma0: float, steps: int, tolerance: float, kwargs: dict[str, Any]
) -> None:
    """Two independent instances, vmapped inside one jit, each reach the optimum."""
    module = BACKENDS[name]
    means = jnp.stack([jnp.zeros(N), jnp.full(N, -1.0)])
    keys = jax.random.split(jax.random.key(3), 2)
    run = jax.jit(jax.vmap(lambda k, m: _minimise(module, k, m, sigma0, steps, **kwargs)))
    state = run(keys, means)
    start = _sphere(means)
    final = _sphere(state.mean)
    assert final.shape == (2,)
    assert bool(jnp.all(final < tolerance * start)), (final, start)


def test_restart_rules() -> None:
    flat = jnp.ones(LAMBDA)
    spread = jnp.linspace(1.0, 0.0, LAMBDA)
    two_stage = jnp.stack([jnp.full(LAMBDA, 2.0), jnp.zeros(LAMBDA)], axis=1)
    for module in BACKENDS.values():
        state = module.init(jnp.zeros(N), SIGMA0, batch_size=LAMBDA)
        assert not bool(module.should_restart(state))
        assert not bool(module.should_restart(state, spread))
        assert bool(module.should_restart(state, flat))
        assert bool(module.should_restart(state, two_stage))  # rows of (status, value)
    cma = cma_es.init(jnp.zeros(N), SIGMA0, batch_size=LAMBDA)
    assert bool(cma_es.should_restart(eqx.tree_at(lambda s: s.condition, cma, 1e15)))
    assert bool(cma_es.should_restart(eqx.tree_at(lambda s: s.sigma, cma, 1e-12)))
    sep = sep_cma_es.init(jnp.zeros(N), SIGMA0, batch_size=LAMBDA)
    skewed = eqx.tree_at(lambda s: s.cov, sep, jnp.ones(N).at[0].set(1e-15))
    assert bool(sep_cma_es.should_restart(skewed))
    assert bool(sep_cma_es.should_restart(eqx.tree_at(lambda s: s.sigma, sep, 1e-12)))
    lm = lm_ma_es.init(jnp.zeros(N), SIGMA0, batch_size=LAMBDA)
    assert bool(lm_ma_es.should_restart(eqx.tree_at(lambda s: s.sigma, lm, 1e-13)))
    oai = openai_es.init(jnp.ones(N), SIGMA0, batch_size=LAMBDA)
    assert not bool(openai_es.should_restart(oai))  # inf before the first tell
    still = eqx.tree_at(lambda s: s.last_update_ratio, oai, 1e-10)
    assert bool(openai_es.should_restart(still))


def test_converged_cma_es_asks_for_a_restart() -> None:
    """Run to convergence on a sphere (float32): once the samples' fitness no longer
    differs, the flat-fitness rule fires by itself."""

    def step(state: Any, key: Any) -> tuple[Any, Any]:
        solutions = cma_es.ask(key, state)
        fitness = -_sphere(solutions)
        order = jnp.argsort(-fitness)
        state = cma_es.tell(state, solutions, order, LAMBDA // 2)
        return state, cma_es.should_restart(state, fitness[order])

    state = cma_es.init(jnp.zeros(N), 0.5, batch_size=LAMBDA)
    keys = jax.random.split(jax.random.key(0), 500)
    _, restart = jax.jit(lambda s: jax.lax.scan(step, s, keys))(state)
    first = int(jnp.argmax(restart))
    assert bool(restart[first]) and first > 100  # not before it has converged


@pytest.mark.parametrize("name", list(BACKENDS))
def test_bounds(name: str) -> None:
    """Solutions stay within the bounds (resampled, then clipped; OpenAI-ES: clipped)."""
    module = BACKENDS[name]
    state = module.init(
        jnp.full(N, 0.9), 1.0, batch_size=LAMBDA, lower_bounds=-1.0, upper_bounds=1.0
    )
    solutions = jax.jit(module.ask)(jax.random.key(1), state)
    assert solutions.shape == (LAMBDA, N)
    assert bool(jnp.all((solutions >= -1.0) & (solutions <= 1.0)))


def test_resampling_replaces_only_rows_outside() -> None:
    def sample(key: Any) -> Any:
        return jax.random.uniform(key, (64, 2), minval=-1.0, maxval=2.0)

    resample = jax.jit(lambda key, low, high: common.sample_within_bounds(key, sample, low, high))
    x = resample(jax.random.key(0), jnp.zeros(2), jnp.ones(2))
    assert bool(jnp.all((x >= 0) & (x <= 1)))
    # Rows are redrawn, not clipped: none sits exactly on a bound.
    assert int(jnp.sum((x == 0) | (x == 1))) == 0
    unbounded = resample(jax.random.key(0), jnp.full(2, -jnp.inf), jnp.full(2, jnp.inf))
    assert float(jnp.max(unbounded)) > 1.0


def test_recombination_weights() -> None:
    weights, mueff = common.recombination_weights(3, 6, jnp.float32)
    raw = np.log(3.5) - np.log([1, 2, 3])
    np.testing.assert_allclose(weights[:3], raw / raw.sum(), rtol=1e-6)
    assert bool(jnp.all(weights[3:] == 0))
    np.testing.assert_allclose(mueff, 1 / np.sum((raw / raw.sum()) ** 2), rtol=1e-6)
    traced = jax.jit(common.recombination_weights, static_argnums=(1, 2))
    np.testing.assert_allclose(traced(jnp.asarray(3), 6, jnp.float32)[0], weights)


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="even batch_size"):
        openai_es.init(jnp.zeros(N), 0.1, batch_size=5)
    with pytest.raises(ConfigError, match="smaller than the dimension"):
        lm_ma_es.init(jnp.zeros(6), 0.1, batch_size=6)
    with pytest.raises(ConfigError, match="sigma0 must be a positive"):
        cma_es.init(jnp.zeros(N), 0.0, batch_size=LAMBDA)
    with pytest.raises(ConfigError, match="one vector"):
        sep_cma_es.init(jnp.zeros((2, N)), 0.1, batch_size=LAMBDA)
    with pytest.raises(ConfigError, match="lower bound must be <="):
        cma_es.init(jnp.zeros(N), 0.1, batch_size=LAMBDA, lower_bounds=1.0, upper_bounds=0.0)
    with pytest.raises(ConfigError, match="integer >= 2"):
        cma_es.init(jnp.zeros(N), 0.1, batch_size=1)
