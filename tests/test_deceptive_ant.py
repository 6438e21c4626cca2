"""Deceptive ant tasks: walls in the Brax system, the trap and the maze stop a forward push,
descriptors stay in bounds, and the model-based interface matches real steps.

Every Brax rollout of a task goes through ONE compiled function (module fixture): the
task's own ``evaluate`` (with transitions, so the model states of every step come back)
on a copy of its env whose Brax system is an argument. Pushes change the system's gravity
and friction, removing the walls sinks them under the floor; none of it recompiles.

The push: gravity tilted towards the push direction (``(3, 0, -9.81)`` m/s^2: a constant
forward force on every body, as walking down a slope), every geom's friction scaled by
0.1, zero actions. The ant slides straight ahead on its feet, upright (every step valid),
like a policy that walks straight ahead as fast as it can; with full friction a tilt
strong enough to carry it that far tips it over instead (used to test termination).
Without walls the same push carries it well past the walls.
"""

from __future__ import annotations

import copy
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.tasks import info, make
from zoo.tasks.base import Evaluation
from zoo.tasks.deceptive_ant import (
    HEALTHY_Z_RANGE,
    MAZE_BOUNDS,
    MAZE_GOAL,
    MAZE_MAX_DISTANCE,
    MAZE_WALLS,
    TRAP_BOUNDS,
    TRAP_OFFSET,
    TRAP_WALLS,
    AntTrapTask,
)

BATCH, LENGTH = 4, 100
TRAP_BACK_FACE = 11.5  # x of the trap's back wall face towards the start
MAZE_EAST_FACE = 19.5  # x of the maze's east wall face towards the start
TORSO_RADIUS = 0.25


def _rollout(task, system, genomes) -> Evaluation:
    """``task.evaluate`` (transitions on) with the env's Brax system replaced by ``system``."""
    variant = copy.copy(task)
    variant.env = copy.copy(task.env)
    variant.env.sys = system
    return variant.evaluate(genomes, jax.random.key(0), transitions=True)


def _pushed(task, gravity_xy=(3.0, 0.0), friction_scale=0.1, walls=True):
    """The task's system with tilted gravity and scaled friction (walls sunk if not walls)."""
    system = task.env.sys
    gravity = system.gravity.at[:2].set(jnp.asarray(gravity_xy))
    system = system.replace(gravity=gravity, geom_friction=system.geom_friction * friction_scale)
    if not walls:
        ids = [system.mj_model.geom(name).id for name in task.wall_names]
        system = system.replace(geom_pos=system.geom_pos.at[jnp.asarray(ids), 2].add(-10.0))
    return system


class Rollouts:
    """A task, its compiled rollout, random and zero (push) policies."""

    def __init__(self, name: str) -> None:
        self.task = make(name, episode_length=LENGTH)
        self.run = eqx.filter_jit(functools.partial(_rollout, self.task))

    @functools.cached_property
    def random(self):
        """``BATCH`` random policies."""
        return self.task.init_genomes(jax.random.key(1), BATCH)

    @functools.cached_property
    def still(self):
        """``BATCH`` policies that output zero actions."""
        return eqx.tree_at(
            lambda p: (p.weights, p.biases),
            self.random,
            replace_fn=lambda leaves: tuple(jnp.zeros_like(x) for x in leaves),
        )

    @functools.cached_property
    def real(self) -> Evaluation:
        """Random policies in the real system."""
        return self.run(self.task.env.sys, self.random)

    @functools.cached_property
    def push(self) -> Evaluation:
        """Zero actions, pushed forward."""
        return self.run(_pushed(self.task), self.still)

    @functools.cached_property
    def push_without_walls(self) -> Evaluation:
        """The same push with the walls sunk under the floor."""
        return self.run(_pushed(self.task, walls=False), self.still)


@pytest.fixture(scope="module")
def trap() -> Rollouts:
    return Rollouts("ant-trap")


@pytest.fixture(scope="module")
def maze() -> Rollouts:
    return Rollouts("ant-maze")


# -- specs and systems (no rollout) -------------------------------------------------------


def test_specs_bounds_names_and_offsets(trap, maze):
    spec = trap.task.spec
    assert spec.descriptor_names == ("x_position", "y_position")
    assert (spec.descriptor_low, spec.descriptor_high) == TRAP_BOUNDS == ((0, -8), (30, 8))
    assert spec.qd_offset == pytest.approx(-TRAP_OFFSET * LENGTH)
    assert (spec.observation_size, spec.action_size) == (27, 8)
    assert trap.task.model_state_size == 29
    spec = maze.task.spec
    assert (spec.descriptor_low, spec.descriptor_high) == MAZE_BOUNDS == ((-5, -5), (40, 40))
    farthest = float(np.hypot(-5.0 - MAZE_GOAL[0], 40.0 - MAZE_GOAL[1]))
    assert MAZE_MAX_DISTANCE == pytest.approx(farthest)
    assert spec.qd_offset == pytest.approx(-farthest * LENGTH)
    assert (spec.min_fitness, spec.max_fitness) == (pytest.approx(-farthest * LENGTH), 0.0)
    for name, task in (("ant-trap", trap.task), ("ant-maze", maze.task)):
        facts = info(name)
        assert (facts.descriptor_names, facts.reset) == (
            task.spec.descriptor_names,
            "deterministic",
        )
        assert make(name).spec.episode_length == facts.episode_length == 250
        assert task.spec.reset == task.reset_protocol == "deterministic"
        assert task.spec.kwargs["backend"] == "spring"
        assert make(name, **task.spec.kwargs).spec == task.spec  # the kwargs rebuild it
        assert make(name, reset="stochastic").spec.reset == "stochastic"


@pytest.mark.parametrize(("name", "walls"), [("ant-trap", TRAP_WALLS), ("ant-maze", MAZE_WALLS)])
def test_walls_are_box_geoms_that_collide_with_feet_and_torso(name, walls, trap, maze):
    task = {"ant-trap": trap, "ant-maze": maze}[name].task
    model = task.env.sys.mj_model
    names = [model.geom(i).name for i in range(model.ngeom)]
    assert task.wall_names == tuple(w.name for w in walls)
    for wall in walls:
        geom = model.geom(wall.name)
        assert geom.type[0] == 6  # mjGEOM_BOX
        np.testing.assert_allclose(
            geom.pos[:2], [(wall.x_low + wall.x_high) / 2, (wall.y_low + wall.y_high) / 2]
        )
        np.testing.assert_allclose(
            geom.size[:2], [(wall.x_high - wall.x_low) / 2, (wall.y_high - wall.y_low) / 2]
        )
        assert model.geom_bodyid[geom.id] == 0  # static, in the world body

    def collide(a: str, b: str) -> bool:
        ga, gb = model.geom(a), model.geom(b)
        return bool((ga.contype & gb.conaffinity) | (gb.contype & ga.conaffinity))

    feet = [n for n in names if n.endswith("foot_geom")]
    assert len(feet) == 4
    for wall in task.wall_names:
        assert all(collide(foot, wall) for foot in feet)
        assert collide("torso_geom", wall)
        assert not collide("left_ankle_geom", wall)
    # The torso still passes through the floor, as in Brax's ant.
    assert not collide("torso_geom", "floor")
    assert all(collide(foot, "floor") for foot in feet)


def test_model_functions_on_hand_made_states(trap, maze):
    obs = jnp.zeros((3, 27)).at[:, 0].set(jnp.asarray([0.5, 0.1, 1.2]))  # torso z
    x = jnp.concatenate([jnp.asarray([[1.0, 2.0], [-3.0, 9.0], [45.0, -20.0]]), obs], axis=1)
    np.testing.assert_array_equal(trap.task.model_observation(x), obs)
    assert HEALTHY_Z_RANGE == (0.2, 1.0)
    np.testing.assert_array_equal(trap.task.model_done(x), [False, True, True])
    np.testing.assert_array_equal(maze.task.model_done(x), [False, False, False])
    np.testing.assert_allclose(trap.task.model_descriptor(x), [[1, 2], [0, 8], [30, -8]])
    np.testing.assert_allclose(maze.task.model_descriptor(x), [[1, 2], [-3, 9], [40, -5]])
    actions = jnp.full((3, 8), 0.5)
    moved = x.at[:, 0].add(0.1)  # 0.1 m forward in one step of 0.05 s
    np.testing.assert_allclose(
        trap.task.model_reward(x, actions, moved), 2.0 + 1.0 - 1.0, atol=1e-4
    )
    np.testing.assert_allclose(
        maze.task.model_reward(x, actions, moved),
        -np.hypot(np.asarray(moved[:, 0]) - 35.0, np.asarray(moved[:, 1])),
        rtol=1e-6,
    )


def test_unknown_backend_is_a_config_error():
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="backend"):
        AntTrapTask("ant-trap", backend="fast")


# -- rollouts -----------------------------------------------------------------------------


def _positions(evaluation: Evaluation) -> np.ndarray:
    """Torso ``(x, y)`` after every step ``[B, T, 2]`` (from the model states)."""
    return np.asarray(evaluation.transitions.next_model_states[..., :2])


@pytest.mark.slow
def test_forward_push_gets_stuck_in_the_trap(trap):
    """Pushed straight ahead, the ant enters the pocket and stays in front of the back wall
    (its torso stops one radius before the face); without walls it passes the wall."""
    stuck, free = trap.push, trap.push_without_walls
    assert bool(jnp.all(stuck.transitions.valid))  # upright all along: a slide, not a fall
    xy = _positions(stuck)
    assert xy[..., 0].max() < TRAP_BACK_FACE
    assert xy[..., 0].max() > TRAP_BACK_FACE - TORSO_RADIUS - 0.1  # it did reach the wall
    final = np.asarray(stuck.descriptors)
    assert np.all((final[:, 0] > 6.5) & (final[:, 0] < TRAP_BACK_FACE))  # inside the pocket
    assert np.all(np.abs(final[:, 1]) < 2.5)
    assert _positions(free)[..., 0].max() > 12.5 + 5.0  # far past the back wall
    assert np.all(np.asarray(free.descriptors)[:, 0] > 12.5)


@pytest.mark.slow
def test_forward_push_stops_at_the_maze_wall(maze):
    """The straight line to the goal is blocked: the push ends against the east wall."""
    xy = _positions(maze.push)
    assert xy[..., 0].max() < MAZE_EAST_FACE
    assert xy[..., 0].max() > MAZE_EAST_FACE - TORSO_RADIUS - 0.1
    assert _positions(maze.push_without_walls)[..., 0].max() > 20.5 + 3.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ant-trap", "ant-maze"])
def test_descriptors_stay_in_bounds(name, trap, maze):
    rollouts = {"ant-trap": trap, "ant-maze": maze}[name]
    low, high = (np.asarray(b) for b in rollouts.task.descriptor_bounds)
    extreme = [
        rollouts.run(_pushed(rollouts.task, push, friction_scale=0.0, walls=False), rollouts.still)
        for push in ((8.0, 8.0), (-8.0, -8.0))
    ]
    for evaluation in (rollouts.real, rollouts.push, *extreme):
        d = np.asarray(evaluation.descriptors)
        assert np.all((d >= low) & (d <= high)), d
    # The extreme pushes leave the bounds: their descriptors are the clipped corners.
    np.testing.assert_allclose(extreme[0].descriptors, np.broadcast_to(high, (BATCH, 2)))
    np.testing.assert_allclose(extreme[1].descriptors, np.broadcast_to(low, (BATCH, 2)))


def _check_model_identities(task, evaluation: Evaluation) -> None:
    steps = evaluation.transitions
    valid = np.asarray(steps.valid)
    x, next_x = steps.model_states, steps.next_model_states
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    np.testing.assert_array_equal(
        task.model_observation(flat(x))[valid.ravel()], flat(steps.observations)[valid.ravel()]
    )
    rewards = task.model_reward(flat(x), flat(steps.actions), flat(next_x)).reshape(valid.shape)
    np.testing.assert_allclose(
        np.asarray(rewards)[valid], np.asarray(steps.rewards)[valid], rtol=1e-5, atol=1e-5
    )
    done = np.asarray(task.model_done(flat(next_x))).reshape(valid.shape)
    np.testing.assert_array_equal(done[valid], np.asarray(steps.terminated)[valid])
    last = np.maximum(valid.sum(axis=1) - 1, 0)
    final = np.asarray(next_x)[np.arange(valid.shape[0]), last]
    np.testing.assert_allclose(task.model_descriptor(jnp.asarray(final)), evaluation.descriptors)
    # The loop's fitness is the sum of the valid rewards.
    np.testing.assert_allclose(
        np.where(valid, rewards, 0.0).sum(axis=1), evaluation.fitness, rtol=1e-5, atol=1e-3
    )


@pytest.mark.slow
def test_model_interface_matches_real_trap_steps(trap):
    # A hard push tips the ant over: the episodes terminate, so `done` is checked too.
    falls = trap.run(_pushed(trap.task, (12.0, 0.0), friction_scale=1.0), trap.still)
    assert bool(jnp.any(falls.transitions.terminated))
    for evaluation in (trap.real, trap.push, falls):
        _check_model_identities(trap.task, evaluation)
    # Brax's own reward terms: forward velocity from the torso x, dt = 0.05.
    steps = trap.real.transitions
    forward = (steps.next_model_states[..., 0] - steps.model_states[..., 0]) / 0.05
    expected = forward + 1.0 - 0.5 * jnp.sum(jnp.square(steps.actions), axis=-1)
    np.testing.assert_allclose(
        jnp.where(steps.valid, expected, 0.0), steps.rewards, rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_model_interface_matches_real_maze_steps(maze):
    falls = maze.run(_pushed(maze.task, (12.0, 0.0), friction_scale=1.0), maze.still)
    assert not bool(jnp.any(falls.transitions.terminated))  # the maze never terminates
    assert bool(jnp.all(falls.transitions.valid))
    for evaluation in (maze.real, maze.push, falls):
        _check_model_identities(maze.task, evaluation)
    xy = maze.real.transitions.next_model_states[..., :2]
    expected = -jnp.linalg.norm(xy - jnp.asarray(MAZE_GOAL), axis=-1)
    np.testing.assert_allclose(maze.real.transitions.rewards, expected, rtol=1e-6)
