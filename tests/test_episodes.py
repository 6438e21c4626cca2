"""The episodic protocol and its one episode loop: a replaced step (imagination),
transitions (chaining, terminated vs truncated, masks), sequencing and rendering on top.

Compiled evaluations are shared through module fixtures (point maze, hopper of 30 steps).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.policy import MLPPolicy
from zoo.errors import ShapeError
from zoo.sequence import run_sequences
from zoo.tasks import EpisodicTask, Transitions, make, run_episodes
from zoo.tasks.point_maze import GOAL

HIDDEN = (8,)
BATCH = 8


def _evaluations(task: EpisodicTask, genomes: Any) -> SimpleNamespace:
    """The real evaluation and one through a replaced step that calls the real one."""
    calls = []

    def model_step(state: Any, actions: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        calls.append(True)
        return task.step(state, actions)

    real = eqx.filter_jit(lambda g, k: task.evaluate(g, k, transitions=True))
    imagined = eqx.filter_jit(lambda g, k: task.evaluate(g, k, transitions=True, step=model_step))
    fast_imagined = eqx.filter_jit(lambda g, k: task.evaluate(g, k, step=model_step))
    key = jax.random.key(4)
    return SimpleNamespace(
        task=task,
        genomes=genomes,
        real=real(genomes, key),
        imagined=imagined(genomes, key),
        fast_imagined=fast_imagined(genomes, key),
        calls=calls,
    )


@pytest.fixture(scope="module")
def maze() -> SimpleNamespace:
    task = make("point-maze", episode_length=20, policy_hidden_sizes=HIDDEN)
    return _evaluations(task, task.init_genomes(jax.random.key(0), BATCH))


@pytest.fixture(scope="module")
def hopper() -> SimpleNamespace:
    task = make("hopper-uni", episode_length=30, policy_hidden_sizes=HIDDEN, reset="stochastic")
    genomes = jax.tree_util.tree_map(lambda x: 3.0 * x, task.init_genomes(jax.random.key(1), BATCH))
    return _evaluations(task, genomes)


@pytest.mark.parametrize("name", ["maze", pytest.param("hopper", marks=pytest.mark.slow)])
def test_replaced_step_gives_the_real_evaluation(name: str, request: Any) -> None:
    run = request.getfixturevalue(name)
    assert run.calls, "the replacement step was never called"
    for imagined in (run.imagined, run.fast_imagined):
        np.testing.assert_array_equal(imagined.fitness, run.real.fitness)
        np.testing.assert_array_equal(imagined.descriptors, run.real.descriptors)
    for field in Transitions.__dataclass_fields__:
        np.testing.assert_array_equal(
            getattr(run.imagined.transitions, field), getattr(run.real.transitions, field)
        )
    assert run.fast_imagined.transitions is None


def test_a_different_model_changes_the_evaluation(maze: SimpleNamespace) -> None:
    """The replacement really drives the episode: a model that never moves the point."""

    def frozen(state: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        return maze.task.step(state, jnp.zeros_like(actions))

    result = maze.task.evaluate(maze.genomes, jax.random.key(4), step=frozen)
    start = maze.task.reset(jax.random.key(4), BATCH)
    np.testing.assert_allclose(result.descriptors, start)


def _check_transitions(steps: Transitions, fitness: jax.Array, length: int) -> np.ndarray:
    """Invariants of any batch of transitions; returns the episode lengths."""
    valid = np.asarray(steps.valid)
    lengths = valid.sum(1)
    np.testing.assert_array_equal(valid, np.arange(length)[None] < lengths[:, None])
    both = valid[:, 1:]
    np.testing.assert_array_equal(
        np.asarray(steps.next_observations)[:, :-1][both],
        np.asarray(steps.observations)[:, 1:][both],
    )
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert np.all(np.asarray(getattr(steps, name))[~valid] == 0.0), name
    terminated, truncated = np.asarray(steps.terminated), np.asarray(steps.truncated)
    assert terminated.dtype == truncated.dtype == bool
    rows = np.arange(valid.shape[0])
    early = lengths < length
    np.testing.assert_array_equal(terminated[rows[early], lengths[early] - 1], True)
    np.testing.assert_array_equal(terminated.sum(1) + truncated.sum(1), 1)
    assert not truncated[:, :-1].any()
    np.testing.assert_allclose(np.asarray(steps.rewards).sum(1), fitness, rtol=1e-5)
    return lengths


def test_hopper_transitions_terminated_and_truncated(hopper: SimpleNamespace) -> None:
    lengths = _check_transitions(hopper.real.transitions, hopper.real.fitness, 30)
    assert (lengths < 30).any(), "no hopper fell: termination is not exercised"
    assert (lengths == 30).any(), "every hopper fell: truncation is not exercised"
    steps = hopper.real.transitions
    np.testing.assert_array_equal(np.asarray(steps.truncated)[:, -1], lengths == 30)


def test_point_maze_goal_terminates_and_time_limit_truncates() -> None:
    """From just below the goal, moving up ends the episode; standing still is cut."""
    task = make("point-maze", episode_length=4, policy_hidden_sizes=HIDDEN)
    start = jnp.asarray([[GOAL[0], GOAL[1] - 0.16], [0.0, -0.85]], jnp.float32)
    up = jnp.asarray([[0.0, 1.0], [0.0, 0.0]])
    result = run_episodes(task, lambda obs, t: up, start, 4, transitions=True)
    steps = result.transitions
    np.testing.assert_array_equal(result.valid_steps, [2, 4])
    np.testing.assert_array_equal(steps.valid, [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(steps.terminated, [[0, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(steps.truncated, [[0, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(steps.next_observations[0, 1], [GOAL[0], GOAL[1] + 0.04], atol=1e-6)
    np.testing.assert_array_equal(steps.observations[0, 2:], 0.0)
    np.testing.assert_allclose(steps.rewards.sum(1), result.returns, rtol=1e-6)
    np.testing.assert_allclose(
        task.finalise_descriptor(result.accumulator, result.valid_steps),
        steps.next_observations[[0, 1], [1, 3]],
    )


def test_point_maze_evaluation_transitions(maze: SimpleNamespace) -> None:
    _check_transitions(maze.real.transitions, maze.real.fitness, 20)


def test_protocol_shapes(maze: SimpleNamespace) -> None:
    task = maze.task
    state = task.reset(jax.random.key(0), 3)
    assert task.observe(state).shape == (3, 2)
    nxt, reward, done = task.step(state, jnp.zeros((3, 2)))
    assert reward.shape == done.shape == (3,)
    acc = task.accumulate_descriptor(task.init_descriptor(state), nxt, jnp.ones(3, bool))
    assert task.finalise_descriptor(acc, jnp.ones(3, jnp.int32)).shape == (3, 2)
    with pytest.raises(ShapeError, match="batched state"):
        run_episodes(task, lambda obs, t: obs, (), 3)


@pytest.mark.slow
def test_segment_constant_sequence_equals_evaluate(hopper: SimpleNamespace) -> None:
    """Brax, stochastic reset, some hoppers fall: 3 segments of one policy = evaluate.

    Slow (a Brax compile of the sequencing loop); tests/test_generator_eval.py checks the same
    identity on point-maze in the fast suite."""
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3, axis=1), hopper.genomes)
    runs = run_sequences(hopper.task, stacked, jax.random.key(4), 7)
    lengths = np.asarray(hopper.real.transitions.valid.sum(1))
    np.testing.assert_array_equal(runs.length, lengths)
    np.testing.assert_array_equal(runs.episode_return, hopper.real.fitness)
    np.testing.assert_allclose(runs.segment_returns.sum(1), hopper.real.fitness, rtol=1e-5)
    np.testing.assert_array_equal(runs.segment_steps.sum(1), lengths)
    expected_steps = np.clip(lengths[:, None] - np.array([0, 7]), 0, 7)
    np.testing.assert_array_equal(runs.segment_steps[:, :2], expected_steps)


@pytest.mark.slow
def test_rollout_states_follow_the_protocol() -> None:
    task = make("hopper-uni", episode_length=30, policy_hidden_sizes=HIDDEN)
    genomes = jax.tree_util.tree_map(lambda x: 3.0 * x, task.init_genomes(jax.random.key(1), 4))
    result = eqx.filter_jit(lambda g, k: task.evaluate(g, k, transitions=True))(
        genomes, jax.random.key(0)
    )
    lengths = np.asarray(result.transitions.valid.sum(1))
    for i in range(4):
        policy: MLPPolicy = jax.tree_util.tree_map(lambda x, i=i: x[i], genomes)
        states = task.rollout_states(policy)
        assert len(states) == lengths[i] + 1
        assert states[0].q.shape == (task.env.sys.q_size(),)
    with pytest.raises(ShapeError, match="ONE policy"):
        task.rollout_states(genomes)
