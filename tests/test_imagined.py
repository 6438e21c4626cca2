"""Imagined episodes: with the true dynamics they equal real ones; the point maze's
model-based interface agrees with its protocol on real steps; member sampling; a learned
model in the loop."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array

from training import replay
from training.dynamics import (
    DynamicsConfig,
    DynamicsData,
    fit_dynamics,
    imagination_step,
    init_dynamics,
    transitions_to_data,
)
from zoo.errors import ConfigError, ShapeError, TaskMismatchError
from zoo.tasks import make, point_maze
from zoo.tasks.imagined import ImaginedState, ImaginedTask, draw_members

EPISODE_LENGTH = 40
POPULATION = 8


def true_step(key: jax.Array, x: Array, actions: Array, members: Array) -> Array:
    """The point maze's own dynamics as a model step."""
    return point_maze.move(x, actions)


@pytest.fixture(scope="module", params=["deterministic", "stochastic"])
def task(request: pytest.FixtureRequest) -> point_maze.PointMazeTask:
    return make("point-maze", episode_length=EPISODE_LENGTH, reset=request.param)


@pytest.fixture(scope="module")
def policies(task: point_maze.PointMazeTask) -> eqx.Module:
    # large random weights: the policies push hard into walls and corners
    genomes = task.init_genomes(jax.random.key(0), POPULATION)
    return jax.tree_util.tree_map(lambda w: 3.0 * w, genomes)


@pytest.mark.parametrize("sampling", ["ts-inf", "ts-1"])
def test_a_perfect_model_gives_the_real_evaluation(
    task: point_maze.PointMazeTask, policies: eqx.Module, sampling: str
) -> None:
    key = jax.random.key(3)
    imagined = ImaginedTask(task, true_step, members=4, sampling=sampling)
    assert imagined.spec == task.spec and imagined.default_policy() == task.default_policy()
    real = jax.jit(lambda p, k: task.evaluate(p, k, transitions=True))(policies, key)
    dream = jax.jit(lambda p, k: imagined.evaluate(p, k, transitions=True))(policies, key)
    np.testing.assert_array_equal(dream.fitness, real.fitness)
    np.testing.assert_array_equal(dream.descriptors, real.descriptors)
    for field in ("observations", "actions", "rewards", "terminated", "valid"):
        np.testing.assert_array_equal(
            getattr(dream.transitions, field), getattr(real.transitions, field)
        )
    # the while-loop path (no transitions) agrees too
    quick = jax.jit(imagined.evaluate)(policies, key)
    np.testing.assert_array_equal(quick.fitness, real.fitness)
    np.testing.assert_array_equal(quick.descriptors, real.descriptors)


def test_termination_in_imagination_ends_the_episode() -> None:
    """A model that jumps into the goal: one valid step, reward 0, descriptor the goal."""
    task = make("point-maze", episode_length=10)
    goal = jnp.asarray(point_maze.GOAL)
    imagined = ImaginedTask(task, lambda key, x, a, m: jnp.broadcast_to(goal, x.shape))
    evaluation = imagined.evaluate(
        task.init_genomes(jax.random.key(0), 3), jax.random.key(1), transitions=True
    )
    np.testing.assert_allclose(evaluation.fitness, 0.0, atol=1e-6)
    np.testing.assert_allclose(evaluation.descriptors, jnp.broadcast_to(goal, (3, 2)))
    assert evaluation.transitions.valid.sum(axis=1).tolist() == [1, 1, 1]
    assert evaluation.transitions.terminated[:, 0].all()


def test_point_maze_model_methods_agree_with_real_steps() -> None:
    task = make("point-maze", reset="stochastic")
    state = task.reset(jax.random.key(0), 6)
    # one episode starts just below the goal and steps into it
    state = state.at[0].set(jnp.array([-0.5, 0.72]))
    accumulator = task.init_descriptor(state)
    valid_steps = jnp.zeros(6, jnp.int32)
    alive = jnp.ones(6, bool)
    x = task.model_state(state)
    assert x.shape == (6, task.model_state_size)
    for t in range(5):
        actions = jax.random.uniform(jax.random.key(t), (6, 2), minval=-2.0, maxval=2.0)
        actions = actions.at[0].set(jnp.array([0.0, 1.0]))
        np.testing.assert_array_equal(task.model_observation(x), task.observe(state))
        next_state, reward, done = task.step(state, actions)
        next_x = task.model_state(next_state)
        np.testing.assert_array_equal(task.model_reward(x, actions, next_x), reward)
        np.testing.assert_array_equal(task.model_done(next_x), done)
        accumulator = task.accumulate_descriptor(accumulator, next_state, alive)
        valid_steps = valid_steps + alive
        alive = alive & ~done
        state, x = next_state, next_x
        if t == 0:
            assert bool(done[0])
    final = task.finalise_descriptor(accumulator, valid_steps)
    last_x = task.model_state(accumulator)  # the state after the last valid step
    np.testing.assert_array_equal(task.model_descriptor(last_x), final)
    # descriptors of imagined states outside the arena are clipped to the bounds
    outside = task.model_descriptor(jnp.array([[3.0, -2.0]]))
    np.testing.assert_array_equal(outside, [[1.0, -1.0]])


def test_members_are_kept_per_episode_or_redrawn_every_step() -> None:
    task = make("point-maze")
    seen = []

    def spy(key: jax.Array, x: Array, actions: Array, members: Array) -> Array:
        seen.append(members)
        return point_maze.move(x, actions)

    actions = jnp.zeros((64, 2))
    for sampling in ("ts-inf", "ts-1"):
        seen.clear()
        imagined = ImaginedTask(task, spy, members=5, sampling=sampling)
        state = imagined.reset(jax.random.key(0), 64)
        assert isinstance(state, ImaginedState) and state.members.shape == (64,)
        start = state.members
        for _ in range(3):
            state, _, _ = imagined.step(state, actions)
        members = np.stack([np.asarray(m) for m in seen])
        assert members.min() >= 0 and members.max() < 5
        assert len(set(members[0].tolist())) > 1  # members differ between episodes
        if sampling == "ts-inf":
            assert (members == np.asarray(start)).all()
        else:
            assert not (members == members[0]).all()


def test_member_draws_are_stratified_when_the_ensemble_divides_the_batch() -> None:
    drawn = np.asarray(draw_members(jax.random.key(0), 64, 4))
    assert np.bincount(drawn, minlength=4).tolist() == [16, 16, 16, 16]
    assert not (drawn == np.arange(64) % 4).all()  # in random order
    other = np.asarray(draw_members(jax.random.key(1), 64, 4))
    assert not (drawn == other).all()
    odd = np.asarray(draw_members(jax.random.key(0), 10, 4))  # 4 does not divide 10
    assert odd.shape == (10,) and odd.min() >= 0 and odd.max() < 4


def test_a_model_reward_replaces_the_task_reward() -> None:
    task = make("point-maze", episode_length=5)
    imagined = ImaginedTask(task, lambda key, x, a, m: (x, jnp.ones(x.shape[0])))
    evaluation = imagined.evaluate(task.init_genomes(jax.random.key(0), 3), jax.random.key(1))
    np.testing.assert_array_equal(evaluation.fitness, 5.0)


def test_imagined_rollouts_of_a_learned_model_run_in_one_compiled_function() -> None:
    task = make("point-maze", episode_length=20, reset="stochastic")
    genomes = task.init_genomes(jax.random.key(0), 16)
    real = task.evaluate(genomes, jax.random.key(1), transitions=True)
    rows, valid = transitions_to_data(real.transitions)
    buffer = replay.add(replay.init(DynamicsData.zeros(2, 2), 512), rows, valid)
    config = DynamicsConfig(members=3, hidden_sizes=(16,), batch_size=32, steps=60)

    @eqx.filter_jit
    def fit_and_imagine(key: jax.Array) -> tuple:
        model = init_dynamics(key, config, task.model_state_size, task.spec.action_size)
        model, metrics = fit_dynamics(key, model, config, buffer)
        imagined = ImaginedTask(task, imagination_step(model), members=config.members)
        return imagined.evaluate(genomes, jax.random.key(1)), metrics

    evaluation, metrics = fit_and_imagine(jax.random.key(2))
    assert evaluation.fitness.shape == (16,) and evaluation.descriptors.shape == (16, 2)
    assert np.isfinite(evaluation.fitness).all() and np.isfinite(evaluation.descriptors).all()
    assert int(metrics["steps_run"]) > 0
    # the imagined descriptors stay inside the task's bounds
    assert (np.abs(np.asarray(evaluation.descriptors)) <= 1.0).all()


def test_bad_arguments_raise_helpful_errors() -> None:
    maze = make("point-maze")
    with pytest.raises(TaskMismatchError, match="model_state"):
        ImaginedTask(make("lp-sphere"), true_step)
    with pytest.raises(ConfigError, match="ts-inf"):
        ImaginedTask(maze, true_step, sampling="ts-2")
    with pytest.raises(ConfigError, match="members"):
        ImaginedTask(maze, true_step, members=0)
    imagined = ImaginedTask(maze, lambda key, x, a, m: x[:, :1])
    with pytest.raises(ShapeError, match="next model states"):
        imagined.step(imagined.reset(jax.random.key(0), 4), jnp.zeros((4, 2)))
