"""The fit module: optimiser from a config, the scan of gradient steps, minibatches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jaxtyping import Array, PRNGKeyArray

from training import fit
from zoo.errors import ConfigError

DATA = {
    "x": jnp.linspace(-1.0, 1.0, 32).reshape(16, 2),
    "y": jnp.arange(16, dtype=jnp.float32),
}


def loss(params: dict[str, Array], batch: dict[str, Array], key: PRNGKeyArray) -> tuple:
    """Least squares plus a key-dependent term (so the loss key matters)."""
    noise = 0.01 * jax.random.normal(key, batch["y"].shape)
    prediction = batch["x"] @ params["w"] + params["b"] + noise
    value = jnp.mean((prediction - batch["y"]) ** 2)
    return value, {"loss": value}


def minibatch(key: PRNGKeyArray) -> dict[str, Array]:
    return fit.sample_rows(key, DATA, 4)


def initial() -> dict[str, Array]:
    return {"w": jnp.zeros(2), "b": jnp.zeros(())}


CONFIG = fit.OptimiserConfig(learning_rate=0.1, grad_clip=1.0, schedule="cosine")


def test_a_scan_of_n_steps_equals_n_single_steps() -> None:
    params = initial()
    optimiser = fit.optimiser(CONFIG, horizon=6)
    step = fit.gradient_step(loss, optimiser, minibatch)
    key = jax.random.key(0)
    scanned, state, metrics, taken = jax.jit(lambda p, s: fit.scan_steps(step, p, s, key, 6))(
        params, optimiser.init(params)
    )
    assert metrics["loss"].shape == (6,) and bool(taken.all())

    one = jax.jit(step)
    p, s = params, optimiser.init(params)
    losses = []
    for i in range(6):
        p, s, m = one(p, s, jax.random.fold_in(key, i))
        losses.append(float(m["loss"]))
    for a, b in zip(jax.tree_util.tree_leaves(scanned), jax.tree_util.tree_leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-6)


def test_scans_split_at_any_step_and_stop_leaves_the_state() -> None:
    params = initial()
    key = jax.random.key(1)
    whole = fit.fit(params, fit.optimiser(CONFIG).init(params), key, 7, loss, minibatch, CONFIG)
    p, s, m1, t1 = fit.fit(
        params, fit.optimiser(CONFIG).init(params), key, 4, loss, minibatch, CONFIG, stop=7
    )
    p, s, m2, t2 = fit.fit(p, s, key, 4, loss, minibatch, CONFIG, start=4, stop=7)
    assert t1.tolist() == [True] * 4 and t2.tolist() == [True, True, True, False]
    assert float(m2["loss"][-1]) == 0.0  # the idle step reports zeros
    for a, b in zip(jax.tree_util.tree_leaves(whole[0]), jax.tree_util.tree_leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(whole[2]["loss"], np.concatenate([m1["loss"], m2["loss"][:3]]))


def test_the_optimiser_follows_the_configured_schedule() -> None:
    """With unit gradients Adam's first update is the learning rate times the schedule."""
    params = jnp.zeros(())
    grads = jnp.ones(())

    def rates(config: fit.OptimiserConfig, horizon: int, steps: int) -> list[float]:
        optimiser = fit.optimiser(config, horizon)
        state = optimiser.init(params)
        out = []
        for _ in range(steps):
            updates, state = optimiser.update(grads, state, params)
            out.append(-float(updates))
        return out

    constant = rates(fit.OptimiserConfig(learning_rate=0.1), 4, 5)
    np.testing.assert_allclose(constant, [0.1] * 5, rtol=1e-4)  # Adam's epsilon
    cosine = rates(fit.OptimiserConfig(learning_rate=0.1, schedule="cosine"), 4, 6)
    expected = [0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * min(s / 4, 1.0)))) for s in range(6)]
    np.testing.assert_allclose(cosine, expected, rtol=1e-4)
    assert cosine[-1] == pytest.approx(0.001, rel=1e-4)
    warm = rates(fit.OptimiserConfig(learning_rate=0.1, warmup_steps=4), 1, 6)
    np.testing.assert_allclose(warm, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rtol=1e-4)
    clipped = fit.optimiser(fit.OptimiserConfig(learning_rate=0.1, grad_clip=0.5))
    assert isinstance(clipped, optax.GradientTransformation)
    decayed = fit.OptimiserConfig(learning_rate=0.1, weight_decay=0.5)
    optimiser = fit.optimiser(decayed)
    updates, _ = optimiser.update(jnp.zeros(()), optimiser.init(jnp.ones(())), jnp.ones(()))
    assert float(updates) == pytest.approx(-0.05)  # AdamW: -lr * decay * param


def test_sample_rows_draws_aligned_rows_from_the_first_rows() -> None:
    batch = fit.sample_rows(jax.random.key(2), DATA, 64, rows=3)
    rows = np.asarray(batch["y"]).astype(int)
    assert set(rows.tolist()) <= {0, 1, 2} and len(set(rows.tolist())) == 3
    np.testing.assert_array_equal(batch["x"], np.asarray(DATA["x"])[rows])


def test_bad_optimiser_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="schedule must be"):
        fit.OptimiserConfig(learning_rate=0.1, schedule="linear")
    with pytest.raises(ConfigError, match="learning_rate"):
        fit.OptimiserConfig(learning_rate=0.0)
    with pytest.raises(ConfigError, match="warmup_steps"):
        fit.OptimiserConfig(learning_rate=0.1, warmup_steps=-1)
