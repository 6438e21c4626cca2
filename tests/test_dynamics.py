"""The dynamics ensemble: fitting a known linear system, spread away from the data, early
stopping, member selection, jit compatibility and errors."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array

from models.dynamics import DynamicsEnsemble, soft_clamp
from training import replay
from training.dynamics import (
    DynamicsConfig,
    DynamicsData,
    DynamicsModel,
    ensemble_std,
    fit_dynamics,
    init_dynamics,
    predict_step,
    transitions_to_data,
)
from zoo.errors import ConfigError, ShapeError
from zoo.tasks.imagined import draw_members

A = jnp.array([[0.9, 0.2], [-0.1, 0.8]])
B = jnp.array([[0.5, 0.0], [0.1, -0.3]])
NOISE = 0.01
ROWS, CAPACITY = 1500, 2048
CONFIG = DynamicsConfig(
    members=4,
    hidden_sizes=(32, 32),
    batch_size=64,
    steps=400,
    eval_every=50,
    patience=5,
    predict_reward=True,
)


def linear_next(states: Array, actions: Array) -> Array:
    """The noiseless linear system ``x' = A x + B a``."""
    return states @ A.T + actions @ B.T


def linear_reward(states: Array, actions: Array) -> Array:
    """A reward that is not a function of the next state alone."""
    return states[:, 0] - 0.5 * actions[:, 1]


def uniform_rows(key: jax.Array, n: int, scale: float = 1.0) -> tuple[Array, Array]:
    k1, k2 = jax.random.split(key)
    states = jax.random.uniform(k1, (n, 2), minval=-scale, maxval=scale)
    actions = jax.random.uniform(k2, (n, 2), minval=-scale, maxval=scale)
    return states, actions


@pytest.fixture(scope="module")
def buffer() -> replay.ReplayBuffer:
    """``ROWS`` noisy transitions of the linear system, states and actions in ``[-1, 1]``, in
    a buffer of ``CAPACITY`` rows (partly filled)."""
    k_rows, k_noise = jax.random.split(jax.random.key(0))
    states, actions = uniform_rows(k_rows, ROWS)
    next_states = linear_next(states, actions)
    next_states = next_states + NOISE * jax.random.normal(k_noise, next_states.shape)
    data = DynamicsData(states, actions, next_states, linear_reward(states, actions))
    return replay.add(replay.init(DynamicsData.zeros(2, 2), CAPACITY), data)


@eqx.filter_jit
def jitted_fit(
    key: jax.Array, model: DynamicsModel, config: DynamicsConfig, buffer: replay.ReplayBuffer
) -> tuple[DynamicsModel, dict[str, Array]]:
    """fit_dynamics traced inside an outer compiled function (as in an emitter's tell)."""
    return fit_dynamics(key, model, config, buffer)


@pytest.fixture(scope="module")
def fitted(buffer: replay.ReplayBuffer) -> tuple[DynamicsModel, dict[str, Array]]:
    model = init_dynamics(jax.random.key(1), CONFIG, 2, 2)
    return jitted_fit(jax.random.key(2), model, CONFIG, buffer)


def test_the_ensemble_fits_a_linear_system(fitted: tuple) -> None:
    model, metrics = fitted
    states, actions = uniform_rows(jax.random.key(3), 512, scale=0.9)
    members = jnp.arange(512, dtype=jnp.int32) % CONFIG.members
    predicted, rewards = predict_step(
        model, jax.random.key(4), states, actions, members, sample=False
    )
    truth = linear_next(states, actions)
    mse = float(jnp.mean(jnp.square(predicted - truth)))
    baseline = float(jnp.mean(jnp.square(states - truth)))  # predicting "no change"
    assert mse < 1e-3 and mse < 0.01 * baseline, (mse, baseline)
    reward_error = float(jnp.mean(jnp.square(rewards - linear_reward(states, actions))))
    assert reward_error < 1e-3
    assert 0 < float(metrics["holdout_mse"]) < 1e-3
    assert np.isfinite(float(metrics["holdout_loss"])) and np.isfinite(float(metrics["train_loss"]))
    assert 0 < int(metrics["steps_run"]) <= CONFIG.steps
    # the normalisers are the data's statistics
    np.testing.assert_allclose(model.input_mean, 0.0, atol=0.05)
    np.testing.assert_allclose(model.input_std, 1 / np.sqrt(3), rtol=0.05)


def test_sampled_steps_spread_like_the_noise(fitted: tuple) -> None:
    model, _ = fitted
    states = jnp.zeros((4000, 2)) + 0.3
    actions = jnp.zeros((4000, 2)) - 0.2
    members = jnp.zeros(4000, jnp.int32)
    sampled, _ = predict_step(model, jax.random.key(5), states, actions, members)
    spread = np.asarray(jnp.std(sampled, axis=0))
    assert np.all(spread > 0.3 * NOISE) and np.all(spread < 3 * NOISE), spread
    np.testing.assert_allclose(
        jnp.mean(sampled, axis=0), linear_next(states, actions)[0], atol=0.02
    )


def test_the_spread_is_much_larger_far_from_the_data(fitted: tuple) -> None:
    model, _ = fitted
    states, actions = uniform_rows(jax.random.key(6), 256, scale=0.9)
    inside = float(jnp.mean(ensemble_std(model, states, actions)))
    outside = float(jnp.mean(ensemble_std(model, 10 * states, 10 * actions)))
    assert inside < 3 * NOISE
    assert outside > 5 * inside, (inside, outside)


def test_each_row_uses_its_member(fitted: tuple) -> None:
    model, _ = fitted
    states, actions = uniform_rows(jax.random.key(7), 8, scale=3.0)
    members = jnp.array([0, 1, 2, 3, 3, 2, 1, 0], jnp.int32)
    chosen, _ = predict_step(model, jax.random.key(0), states, actions, members, sample=False)
    for e in range(CONFIG.members):
        alone, _ = predict_step(
            model, jax.random.key(0), states, actions, jnp.full(8, e, jnp.int32), sample=False
        )
        rows = np.asarray(members) == e
        np.testing.assert_allclose(chosen[rows], alone[rows], rtol=1e-6, atol=1e-6)
    # far from the data the members disagree, so the choice of member matters
    other, _ = predict_step(model, jax.random.key(0), states, actions, 3 - members, sample=False)
    assert not np.allclose(chosen, other)
    # inside a compiled function: the same prediction
    jitted = eqx.filter_jit(predict_step)
    np.testing.assert_allclose(
        jitted(model, jax.random.key(0), states, actions, members, sample=False)[0],
        chosen,
        rtol=1e-5,
        atol=1e-6,
    )


def test_balanced_members_predict_as_every_member_does(fitted: tuple) -> None:
    # Each member owning B / E rows runs on its own rows only; the prediction is that of
    # every member on every row, row b keeping member b's.
    model, _ = fitted
    states, actions = uniform_rows(jax.random.key(8), 64, scale=3.0)
    rows = jnp.arange(64)
    mean, _ = model.normalised_outputs(states, actions)
    for members in (
        draw_members(jax.random.key(9), 64, CONFIG.members),  # balanced
        jnp.arange(64, dtype=jnp.int32) % 3,  # member 3 owns no row
    ):
        expected = states + model.delta_mean + model.delta_std * mean[members, rows][:, :2]
        predicted, _ = eqx.filter_jit(predict_step)(
            model, jax.random.key(0), states, actions, members, sample=False
        )
        np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_a_deterministic_ensemble_fits_by_mean_squared_error(
    buffer: replay.ReplayBuffer,
) -> None:
    config = dataclasses.replace(CONFIG, probabilistic=False, predict_reward=False)
    model = init_dynamics(jax.random.key(1), config, 2, 2)
    model, metrics = jitted_fit(jax.random.key(2), model, config, buffer)
    states, actions = uniform_rows(jax.random.key(3), 256, scale=0.9)
    members = jnp.zeros(256, jnp.int32)
    mean, rewards = predict_step(model, jax.random.key(4), states, actions, members, sample=False)
    drawn, _ = predict_step(model, jax.random.key(4), states, actions, members, sample=True)
    assert rewards is None
    np.testing.assert_array_equal(mean, drawn)  # no sampling in a deterministic model
    assert float(jnp.mean(jnp.square(mean - linear_next(states, actions)))) < 1e-3
    # the held-out loss is the (normalised) mean squared error: non-negative
    assert 0 <= float(metrics["holdout_loss"]) < 0.1


STALL = DynamicsConfig(
    members=2,
    hidden_sizes=(8,),
    batch_size=16,
    steps=1000,
    eval_every=20,
    patience=3,
    learning_rate=1e-2,
    min_improvement=10.0,  # no check can improve by this much: the fit stalls
)


def test_early_stopping_stops_when_the_held_out_loss_stalls_and_keeps_the_best(
    buffer: replay.ReplayBuffer,
) -> None:
    model = init_dynamics(jax.random.key(8), STALL, 2, 2)
    fitted, metrics = jitted_fit(jax.random.key(9), model, STALL, buffer)
    assert int(metrics["steps_run"]) == STALL.eval_every * STALL.patience < STALL.steps
    # the best check is the starting one: its parameters come back unchanged (training at
    # this learning rate moves them: see the fit without held-out rows below)
    for before, after in zip(
        jax.tree_util.tree_leaves(model.ensemble),
        jax.tree_util.tree_leaves(fitted.ensemble),
        strict=True,
    ):
        np.testing.assert_array_equal(before, after)
    # ... while the normalisers are the data's
    assert not np.array_equal(fitted.delta_std, model.delta_std)


def test_an_empty_buffer_runs_no_step() -> None:
    model = init_dynamics(jax.random.key(8), STALL, 2, 2)
    empty = replay.init(DynamicsData.zeros(2, 2), CAPACITY)  # the shapes compiled above
    fitted, metrics = jitted_fit(jax.random.key(9), model, STALL, empty)
    assert int(metrics["steps_run"]) == 0 and np.isnan(float(metrics["holdout_loss"]))
    np.testing.assert_array_equal(fitted.input_std, 1.0)
    first = jax.tree_util.tree_leaves(model.ensemble)[0]
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(fitted.ensemble)[0], first)


def test_without_holdout_every_step_runs_and_the_last_parameters_are_kept(
    buffer: replay.ReplayBuffer,
) -> None:
    config = dataclasses.replace(STALL, holdout=0.0, steps=30)
    model = init_dynamics(jax.random.key(8), config, 2, 2)
    fitted, metrics = jitted_fit(jax.random.key(9), model, config, buffer)
    assert int(metrics["steps_run"]) == 30 and np.isnan(float(metrics["holdout_mse"]))
    assert np.isfinite(float(metrics["train_loss"]))
    first = jax.tree_util.tree_leaves(model.ensemble)[0]
    assert not np.array_equal(jax.tree_util.tree_leaves(fitted.ensemble)[0], first)


def test_the_log_std_is_soft_clamped_between_its_bounds() -> None:
    low, high = jnp.array([-2.0]), jnp.array([0.5])
    raw = jnp.linspace(-50.0, 50.0, 101)[:, None]
    clamped = soft_clamp(raw, low, high)
    assert (
        float(clamped.min()) >= -2.0 and float(clamped.max()) <= 0.5 + np.log1p(np.exp(-2.5)) + 1e-6
    )
    # far inside wide bounds: the identity
    wide = soft_clamp(jnp.array([[-1.0], [0.0]]), jnp.array([-10.0]), jnp.array([5.0]))
    np.testing.assert_allclose(wide[:, 0], [-1.0, 0.0], atol=0.01)
    assert np.all(np.diff(np.asarray(clamped[:, 0])) >= 0)
    ensemble = DynamicsEnsemble(3, 2, members=3, hidden_sizes=(4,), key=jax.random.key(0))
    mean, log_std = ensemble(jnp.full((3, 5, 3), 100.0))
    assert mean.shape == log_std.shape == (3, 5, 2) and ensemble.size == 3
    assert (
        float(log_std.max()) <= 0.25 + np.log1p(np.exp(-5.25)) + 1e-6
        and float(log_std.min()) >= -5.0
    )


def test_transitions_become_rows() -> None:
    from zoo.tasks import make

    task = make("point-maze", episode_length=5)
    evaluation = task.evaluate(
        task.init_genomes(jax.random.key(0), 3), jax.random.key(1), transitions=True
    )
    data, valid = transitions_to_data(evaluation.transitions)
    assert data.states.shape == (15, 2) and data.rewards.shape == (15,) and valid.shape == (15,)
    np.testing.assert_array_equal(data.next_states[:4], data.states[1:5])


def test_bad_arguments_raise_helpful_errors(buffer: replay.ReplayBuffer) -> None:
    with pytest.raises(ConfigError, match="holdout"):
        DynamicsConfig(holdout=1.0)
    with pytest.raises(ConfigError, match="members"):
        DynamicsConfig(members=0)
    with pytest.raises(ConfigError, match="hidden_sizes"):
        DynamicsConfig(hidden_sizes=())
    with pytest.raises(ConfigError, match="activation"):
        DynamicsConfig(activation="sigmoid")
    with pytest.raises(ConfigError, match="state_size"):
        init_dynamics(jax.random.key(0), STALL, 0, 2)
    model = init_dynamics(jax.random.key(0), STALL, 2, 2)
    with pytest.raises(ConfigError, match="probabilistic"):
        fit_dynamics(
            jax.random.key(0), model, dataclasses.replace(STALL, probabilistic=False), buffer
        )
    wrong = init_dynamics(jax.random.key(0), STALL, 3, 2)
    with pytest.raises(ShapeError, match="DynamicsData.zeros"):
        fit_dynamics(jax.random.key(0), wrong, STALL, buffer)
    with pytest.raises(ShapeError, match="DynamicsData"):
        fit_dynamics(jax.random.key(0), model, STALL, replay.init({"x": jnp.zeros(2)}, 8))
    with pytest.raises(ShapeError, match="actions"):
        predict_step(model, jax.random.key(0), jnp.zeros((4, 2)), jnp.zeros((4, 3)), jnp.zeros(4))
    with pytest.raises(ShapeError, match="member index per row"):
        predict_step(model, jax.random.key(0), jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.zeros(3))
