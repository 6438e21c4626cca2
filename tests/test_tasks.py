"""Tasks: registry, specs, descriptors, the episode loop's two paths, benchmark formulas.

Brax evaluations compile once per module (hopper, batch 8, 30 steps) and are shared by
the tests through module-scoped fixtures.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.policy import MLPPolicy, PolicySpec
from zoo.errors import ConfigError, ShapeError, TaskMismatchError, UnknownNameError
from zoo.tasks import make, names
from zoo.tasks.base import Evaluation
from zoo.tasks.episodes import run_episodes
from zoo.tasks.locomotion import feet_contact
from zoo.tasks.point_maze import GOAL, in_goal, move

ALL_NAMES = [
    "ant-maze",
    "ant-omni",
    "ant-trap",
    "ant-uni",
    "arm",
    "halfcheetah-uni",
    "hopper-uni",
    "humanoid-uni",
    "lp-sphere",
    "point-maze",
    "walker2d-uni",
]
# name -> (descriptor size, observation size, action size) with the default settings.
EXPECTED = {
    "hopper-uni": (1, 11, 3),
    "walker2d-uni": (2, 17, 6),
    "halfcheetah-uni": (2, 17, 6),
    "ant-uni": (4, 27, 8),
    "humanoid-uni": (2, 244, 17),
    "ant-omni": (2, 27, 8),
    "ant-trap": (2, 27, 8),
    "ant-maze": (2, 27, 8),
    "point-maze": (2, 2, 2),
    "arm": (2, None, None),
    "lp-sphere": (2, None, None),
}
QDAX_OFFSETS = {
    "hopper-uni": 0.9,
    "walker2d-uni": 1.413,
    "halfcheetah-uni": 9.231,
    "ant-uni": 3.24,
    "humanoid-uni": 0.0,
    "ant-omni": 3.0,
    "ant-trap": 3.38,
}
BATCH, LENGTH = 8, 30


@pytest.fixture(scope="module")
def tasks():
    """Every registered task with its defaults, built once."""
    return {name: make(name) for name in ALL_NAMES}


# -- registry ---------------------------------------------------------------------------


def test_names_lists_every_task():
    assert names() == ALL_NAMES


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        make("walker3d-uni")
    message = str(info.value)
    assert "walker3d-uni" in message
    for name in ALL_NAMES:
        assert name in message


@pytest.mark.parametrize(
    ("name", "overrides", "needle"),
    [
        ("arm", {"dimension": 10}, "num_joints"),
        ("lp-sphere", {"num_joints": 10}, "dimension"),
        ("hopper-uni", {"env_name": "ant"}, "episode_length"),
        ("point-maze", {"backend": "spring"}, "episode_length"),
    ],
)
def test_unknown_override_names_valid_ones(name, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        make(name, **overrides)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("lp-sphere", {"dimension": 3}),
        ("arm", {"num_joints": 0}),
        ("point-maze", {"reset": "sometimes"}),
        ("point-maze", {"episode_length": 0}),
        ("hopper-uni", {"backend": "bullet"}),
    ],
)
def test_bad_override_values(name, overrides):
    with pytest.raises(ConfigError):
        make(name, **overrides)


# -- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_spec_fields(tasks, name):
    task = tasks[name]
    spec = task.spec
    descriptors, observations, actions = EXPECTED[name]
    assert spec.name == name
    assert spec.descriptor_size == descriptors
    assert len(spec.descriptor_low) == len(spec.descriptor_high) == descriptors
    assert all(lo < hi for lo, hi in zip(spec.descriptor_low, spec.descriptor_high, strict=True))
    assert spec.observation_size == observations
    assert spec.action_size == actions
    assert spec.reset == "deterministic"
    # kwargs are JSON-serialisable and rebuild the same task.
    assert json.loads(json.dumps(spec.to_dict()))["kwargs"] == spec.kwargs
    assert make(name, **json.loads(json.dumps(spec.kwargs))).spec == spec
    if spec.genome == "policy":
        assert spec.genome_size is None
        assert spec.episode_length == spec.kwargs["episode_length"]
        policy = task.default_policy()
        assert (policy.observation_size, policy.action_size) == (observations, actions)
        assert policy.hidden_sizes == (64, 64)
    else:
        assert spec.episode_length == 1
        assert task.default_policy() is None
    if name in QDAX_OFFSETS:
        assert spec.episode_length == 250
        assert spec.qd_offset == pytest.approx(-QDAX_OFFSETS[name] * 250)


def test_vector_specs(tasks):
    arm, sphere = tasks["arm"].spec, tasks["lp-sphere"].spec
    assert arm.genome == sphere.genome == "vector"
    assert arm.genome_size == sphere.genome_size == 100
    assert arm.descriptor_high == (100.0, 100.0)
    assert sphere.descriptor_high == pytest.approx((256.0, 256.0))
    assert (sphere.min_fitness, sphere.max_fitness) == (0.0, 100.0)
    assert arm.max_fitness == 100.0
    assert make("lp-sphere", dimension=6).spec.genome_size == 6


def test_point_maze_offset_is_lowest_fitness(tasks):
    spec = tasks["point-maze"].spec
    assert spec.qd_offset == pytest.approx(-math.hypot(1.5, 1.8) * spec.episode_length)
    assert spec.qd_offset == spec.min_fitness


def test_overrides_recorded_in_spec():
    task = make("point-maze", episode_length=7, reset="stochastic", policy_hidden_sizes=[8])
    assert task.spec.kwargs == {
        "episode_length": 7,
        "reset": "stochastic",
        "policy_hidden_sizes": [8],
    }
    assert task.spec.reset == "stochastic"
    assert task.default_policy().hidden_sizes == (8,)


# -- policy / genome checks -------------------------------------------------------------


def test_policy_spec_mismatch(tasks):
    with pytest.raises(TaskMismatchError, match="observation_size=17"):
        tasks["walker2d-uni"].init_genomes(jax.random.key(0), 2, PolicySpec(11, 3))
    walker_policies = PolicySpec(17, 6, (4,)).init_population(jax.random.key(0), 2)
    with pytest.raises(TaskMismatchError, match="observation_size=11"):
        tasks["hopper-uni"].evaluate(walker_policies, jax.random.key(0))
    with pytest.raises(TaskMismatchError):
        tasks["arm"].init_genomes(jax.random.key(0), 2, PolicySpec(2, 2))
    with pytest.raises(ShapeError):
        tasks["arm"].evaluate(jnp.zeros((2, 3)), jax.random.key(0))
    single = PolicySpec(2, 2, (4,)).init(jax.random.key(0))
    with pytest.raises(ShapeError, match="population"):
        tasks["point-maze"].evaluate(single, jax.random.key(0))


def test_init_genomes_shapes(tasks):
    population = tasks["hopper-uni"].init_genomes(jax.random.key(0), 3)
    assert population.weights[0].shape == (3, 64, 11)
    assert population.weights[-1].shape == (3, 3, 64)
    small = tasks["hopper-uni"].init_genomes(jax.random.key(0), 3, PolicySpec(11, 3, (5,)))
    assert small.weights[0].shape == (3, 5, 11)
    vectors = tasks["lp-sphere"].init_genomes(jax.random.key(0), 5)
    assert vectors.shape == (5, 100)
    assert float(jnp.min(vectors)) >= -5.12 and float(jnp.max(vectors)) <= 5.12
    angles = tasks["arm"].init_genomes(jax.random.key(0), 5)
    assert angles.shape == (5, 100)
    assert float(jnp.max(jnp.abs(angles))) <= math.pi


# -- feet contact -----------------------------------------------------------------------


def test_foot_links(tasks):
    assert tasks["walker2d-uni"].foot_links == (3, 6)
    assert tasks["hopper-uni"].foot_links == (3,)
    assert tasks["halfcheetah-uni"].foot_links == (3, 6)
    assert tasks["ant-uni"].foot_links == (2, 4, 6, 8)
    assert tasks["humanoid-uni"].foot_links == (6, 4)


def test_feet_contact_rule():
    """Floor contacts (link -1, either order) at dist <= 0 count; others do not."""
    contact = SimpleNamespace(
        link_idx=(jnp.array([-1, -1, -1, 5, -1]), jnp.array([0, 3, 3, -1, 6])),
        dist=jnp.array([-0.1, 0.02, 0.0, -0.01, 0.3]),
    )
    state = SimpleNamespace(contact=contact)
    np.testing.assert_array_equal(feet_contact(state, (3, 5, 6, 0)), [True, True, False, True])


def test_feet_contact_physical_states(tasks):
    """Walker2d put by hand high above the floor (no contact) and pressed into it (both)."""
    env = tasks["walker2d-uni"].env
    init = jax.jit(env.pipeline_init)
    q0, qd0 = env.sys.init_q, jnp.zeros(env.sys.qd_size())
    in_air = init(q0.at[1].add(5.0), qd0)  # q[1] is the root's vertical slide
    on_floor = init(q0.at[1].add(-0.1), qd0)
    links = tasks["walker2d-uni"].foot_links
    np.testing.assert_array_equal(feet_contact(in_air, links), [False, False])
    np.testing.assert_array_equal(feet_contact(on_floor, links), [True, True])
    # One leg swung forward (thigh hinge) lifts its foot off the floor.
    one_up = init(q0.at[1].add(-0.05).at[3].set(-1.2), qd0)
    np.testing.assert_array_equal(feet_contact(one_up, links), [False, True])


# -- the episode loop -------------------------------------------------------------------


class _Counter:
    """Toy episodic protocol: the state is ``(t, stop)``; episode b ends on step ``stop[b]``."""

    def step(self, state, actions):
        t, stop = state
        t = t + 1
        return (t, stop), t.astype(jnp.float32) + actions[:, 0], t >= stop

    def observe(self, state):
        return state[0][:, None].astype(jnp.float32)

    def init_descriptor(self, state):
        return jnp.zeros_like(state[0])

    def accumulate_descriptor(self, last, next_state, valid):
        return jnp.where(valid, next_state[0], last)


def test_run_episodes_masks_after_termination():
    """Episode b ends on its step ``b + 1``; rewards after that must not count."""
    stop = jnp.array([1, 2, 3, 10])
    args = (
        _Counter(),
        lambda obs, t: jnp.zeros((obs.shape[0], 1)),
        (jnp.zeros(4, jnp.int32), stop),
        5,
    )
    fast = run_episodes(*args)
    full = run_episodes(*args, transitions=True)
    assert fast.transitions is None
    np.testing.assert_array_equal(fast.valid_steps, [1, 2, 3, 5])
    np.testing.assert_array_equal(fast.returns, [1.0, 3.0, 6.0, 15.0])
    np.testing.assert_array_equal(fast.accumulator, [1, 2, 3, 5])
    np.testing.assert_array_equal(full.returns, fast.returns)
    np.testing.assert_array_equal(full.accumulator, fast.accumulator)
    steps = full.transitions
    valid = np.asarray(steps.valid)
    np.testing.assert_array_equal(valid.sum(1), [1, 2, 3, 5])
    np.testing.assert_array_equal(steps.rewards[2], [1.0, 2.0, 3.0, 0.0, 0.0])
    np.testing.assert_array_equal(steps.observations[1, :, 0], [0.0, 1.0, 0, 0, 0])
    np.testing.assert_array_equal(steps.next_observations[1, :, 0], [1.0, 2.0, 0, 0, 0])
    # episodes 0-2 terminate on their last valid step; episode 3 is cut by the time limit
    np.testing.assert_array_equal(
        steps.terminated,
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(steps.truncated[:, -1], [False, False, False, True])
    assert int(np.asarray(steps.truncated).sum()) == 1


def test_run_episodes_passes_the_step_index_and_replaces_step():
    """``act`` sees the step index; ``step=`` replaces the task's dynamics."""
    seen = []

    def act(obs, t):
        return jnp.broadcast_to(t.astype(jnp.float32), (obs.shape[0], 1))

    def doubled(state, actions):
        (t, stop), reward, done = _Counter().step(state, actions)
        seen.append(True)
        return (t, stop), 2.0 * reward, done

    start = (jnp.zeros(2, jnp.int32), jnp.array([10, 10]))
    real = run_episodes(_Counter(), act, start, 3)
    imagined = run_episodes(_Counter(), act, start, 3, step=doubled)
    # rewards t + action: (1 + 0) + (2 + 1) + (3 + 2)
    np.testing.assert_array_equal(real.returns, [9.0, 9.0])
    np.testing.assert_array_equal(imagined.returns, [18.0, 18.0])
    assert seen


# -- brax evaluation (hopper: early terminations are frequent) ---------------------------


@pytest.fixture(scope="module")
def hopper():
    task = make("hopper-uni", episode_length=LENGTH)
    genomes = task.init_genomes(jax.random.key(3), BATCH)
    evaluate = eqx.filter_jit(task.evaluate)
    fast = evaluate(genomes, jax.random.key(0))
    full = evaluate(genomes, jax.random.key(0), transitions=True)
    return SimpleNamespace(task=task, genomes=genomes, evaluate=evaluate, fast=fast, full=full)


def test_brax_evaluation_shapes(hopper):
    assert isinstance(hopper.fast, Evaluation)
    assert hopper.fast.fitness.shape == (BATCH,)
    assert hopper.fast.descriptors.shape == (BATCH, 1)
    assert hopper.fast.transitions is None
    steps = hopper.full.transitions
    assert steps.observations.shape == steps.next_observations.shape == (BATCH, LENGTH, 11)
    assert steps.actions.shape == (BATCH, LENGTH, 3)
    assert steps.rewards.shape == steps.valid.shape == (BATCH, LENGTH)
    assert steps.terminated.shape == steps.truncated.shape == (BATCH, LENGTH)
    assert steps.terminated.dtype == steps.truncated.dtype == steps.valid.dtype == bool


def test_while_loop_equals_scan(hopper):
    np.testing.assert_array_equal(hopper.fast.fitness, hopper.full.fitness)
    np.testing.assert_array_equal(hopper.fast.descriptors, hopper.full.descriptors)


def test_transitions_consistent_with_fitness(hopper):
    steps = hopper.full.transitions
    valid = np.asarray(steps.valid)
    lengths = valid.sum(1)
    assert valid[:, 0].all()
    assert (lengths < LENGTH).any(), "no early termination: the test loses its point"
    assert (lengths == LENGTH).any(), "no episode reaches the time limit"
    # valid is a prefix: once an episode ends it stays ended.
    np.testing.assert_array_equal(valid, np.arange(LENGTH)[None] < lengths[:, None])
    np.testing.assert_allclose(steps.rewards.sum(1), hopper.full.fitness, rtol=1e-5)
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert np.all(np.asarray(getattr(steps, name))[~valid] == 0.0), name
    # a descriptor is a count of valid steps divided by their number
    counts = np.asarray(hopper.full.descriptors[:, 0]) * lengths
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)


def test_transitions_chain_and_end_flags(hopper):
    steps = hopper.full.transitions
    valid = np.asarray(steps.valid)
    lengths = valid.sum(1)
    both = valid[:, 1:]  # steps t and t + 1 both valid
    np.testing.assert_array_equal(
        np.asarray(steps.next_observations)[:, :-1][both],
        np.asarray(steps.observations)[:, 1:][both],
    )
    terminated, truncated = np.asarray(steps.terminated), np.asarray(steps.truncated)
    rows = np.arange(BATCH)
    ended_early = lengths < LENGTH
    # an episode either terminates on its last valid step or is cut at T - 1, never both
    np.testing.assert_array_equal(terminated.sum(1) + truncated.sum(1), np.ones(BATCH))
    np.testing.assert_array_equal(terminated[rows, lengths - 1][ended_early], True)
    np.testing.assert_array_equal(truncated[:, -1], ~terminated[:, -1] & valid[:, -1])
    assert not truncated[:, :-1].any()
    assert not (terminated & ~valid).any()


def test_brax_descriptors_within_bounds(hopper):
    low, high = hopper.task.descriptor_bounds
    descriptors = hopper.fast.descriptors
    assert bool(jnp.all((descriptors >= low) & (descriptors <= high)))
    assert bool(jnp.all(jnp.isfinite(hopper.fast.fitness)))


def test_deterministic_reevaluation_is_identical(hopper):
    again = hopper.evaluate(hopper.genomes, jax.random.key(123))  # key is ignored
    np.testing.assert_array_equal(again.fitness, hopper.fast.fitness)
    np.testing.assert_array_equal(again.descriptors, hopper.fast.descriptors)
    # reordering the batch reorders the results (no cross-talk between individuals)
    order = jnp.arange(BATCH)[::-1]
    shuffled = jax.tree_util.tree_map(lambda x: x[order], hopper.genomes)
    reordered = hopper.evaluate(shuffled, jax.random.key(0))
    np.testing.assert_allclose(reordered.fitness, hopper.fast.fitness[order], rtol=1e-5)
    np.testing.assert_allclose(reordered.descriptors, hopper.fast.descriptors[order], atol=1e-6)


@pytest.mark.slow
def test_ant_omni_reward_and_position():
    task = make("ant-omni", episode_length=20)
    genomes = task.init_genomes(jax.random.key(0), 4)
    evaluate = eqx.filter_jit(lambda g, k: task.evaluate(g, k, transitions=True))
    result = evaluate(genomes, jax.random.key(0))
    steps = result.transitions
    expected = 1.0 - 0.5 * jnp.sum(jnp.square(steps.actions), axis=-1)
    expected = jnp.where(steps.valid, expected, 0.0)
    np.testing.assert_allclose(steps.rewards, expected, atol=1e-5)
    assert result.descriptors.shape == (4, 2)
    assert bool(jnp.all(jnp.abs(result.descriptors) <= 30.0))


@pytest.mark.slow
def test_rollout_states_for_rendering():
    task = make("hopper-uni", episode_length=10)
    policy = task.default_policy().init(jax.random.key(0))
    states = task.rollout_states(policy)
    assert 2 <= len(states) <= 11
    assert states[0].q.shape == (task.env.sys.q_size(),)


# -- point maze -------------------------------------------------------------------------


def test_point_maze_walls_block_motion():
    up, down = jnp.array([0.0, 1.0]), jnp.array([0.0, -1.0])
    # Lower wall (y = -0.5, x in [-0.5, 1]) blocks from below, not through the left gap.
    np.testing.assert_allclose(move(jnp.array([0.0, -0.55]), up), [0.0, -0.505])
    np.testing.assert_allclose(move(jnp.array([-0.7, -0.55]), up), [-0.7, -0.45], atol=1e-6)
    # Upper wall (y = 0.2, x in [-1, 0.5]) blocks from above, not through the right gap.
    np.testing.assert_allclose(move(jnp.array([0.0, 0.25]), down), [0.0, 0.205])
    np.testing.assert_allclose(move(jnp.array([0.7, 0.25]), down), [0.7, 0.15], atol=1e-6)
    # Diagonal move: the wall stops y, x still slides.
    np.testing.assert_allclose(
        move(jnp.array([0.0, -0.55]), jnp.array([1.0, 1.0])), [0.1, -0.505], atol=1e-6
    )
    # Actions are clipped to [-1, 1] and scaled by 1/10; the arena is [-1, 1]^2.
    np.testing.assert_allclose(move(jnp.array([0.0, 0.0]), jnp.array([5.0, 0.0])), [0.1, 0.0])
    np.testing.assert_allclose(move(jnp.array([0.95, 0.0]), jnp.array([1.0, 0.0])), [1.0, 0.0])
    assert bool(in_goal(jnp.asarray(GOAL)))
    assert not bool(in_goal(jnp.asarray(GOAL) + 0.06))


def _constant_policies(outputs: jnp.ndarray) -> MLPPolicy:
    """Policies ``[B]`` that output ``outputs[b]`` (``[B, 2]``, inside (-1, 1)) always."""
    batch = outputs.shape[0]
    return MLPPolicy(
        weights=(jnp.zeros((batch, 2, 2)),),
        biases=(jnp.arctanh(outputs),),
        obs_mean=None,
        obs_std=None,
    )


def test_point_maze_episode_against_hand_computation():
    task = make("point-maze", episode_length=6)
    # straight up (blocked by the lower wall) and standing still
    policies = _constant_policies(jnp.array([[0.0, 0.999999], [0.0, 0.0]]))
    fast = task.evaluate(policies, jax.random.key(0))
    full = task.evaluate(policies, jax.random.key(0), transitions=True)
    ys = [-0.75, -0.65, -0.55, -0.505, -0.505, -0.505]
    up = -sum(math.hypot(0.5, 0.8 - y) for y in ys)
    still = -6 * math.hypot(0.5, 0.8 + 0.85)
    np.testing.assert_allclose(fast.fitness, [up, still], rtol=1e-5)
    np.testing.assert_allclose(fast.descriptors, [[0.0, -0.505], [0.0, -0.85]], atol=1e-5)
    np.testing.assert_array_equal(fast.fitness, full.fitness)
    np.testing.assert_array_equal(fast.descriptors, full.descriptors)
    assert full.transitions.observations.shape == (2, 6, 2)


def test_point_maze_reset_protocols():
    policies = _constant_policies(jnp.zeros((3, 2)))
    deterministic = make("point-maze", episode_length=3)
    a = deterministic.evaluate(policies, jax.random.key(0))
    b = deterministic.evaluate(policies, jax.random.key(1))
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    stochastic = make("point-maze", episode_length=3, reset="stochastic")
    c = stochastic.evaluate(policies, jax.random.key(0))
    d = stochastic.evaluate(policies, jax.random.key(0))
    e = stochastic.evaluate(policies, jax.random.key(1))
    np.testing.assert_array_equal(c.descriptors, d.descriptors)
    assert not np.array_equal(c.descriptors, e.descriptors)
    assert len(np.unique(np.asarray(c.descriptors[:, 0]))) == 3
    low, high = stochastic.descriptor_bounds
    assert bool(jnp.all((c.descriptors >= low) & (c.descriptors <= high)))


def test_non_finite_policies_do_not_crash():
    task = make("point-maze", episode_length=4)
    policies = task.init_genomes(jax.random.key(0), 3)
    policies = eqx.tree_at(lambda p: p.biases[-1], policies, policies.biases[-1].at[1].set(jnp.nan))
    result = task.evaluate(policies, jax.random.key(0))
    finite = np.isfinite(np.asarray(result.fitness))
    np.testing.assert_array_equal(finite, [True, False, True])


# -- benchmark functions ----------------------------------------------------------------


def test_arm_formulas():
    task = make("arm", num_joints=4)
    zeros = task.evaluate(jnp.zeros((1, 4)), jax.random.key(0))
    np.testing.assert_allclose(zeros.fitness, [100.0])
    np.testing.assert_allclose(zeros.descriptors, [[4.0, 0.0]], atol=1e-6)
    # first joint at 90 degrees: the arm points straight up; Var = 3 pi^2 / 64
    bent = task.evaluate(jnp.array([[math.pi / 2, 0.0, 0.0, 0.0]]), jax.random.key(0))
    np.testing.assert_allclose(bent.fitness, [(1 - 3 * math.pi**2 / 64) * 100], rtol=1e-5)
    np.testing.assert_allclose(bent.descriptors, [[0.0, 4.0]], atol=1e-5)
    # joints alternate +90/-90: a staircase ending at (2, 2)
    stairs = jnp.array([[math.pi / 2, -math.pi / 2, math.pi / 2, -math.pi / 2]])
    np.testing.assert_allclose(task.evaluate(stairs, None).descriptors, [[2.0, 2.0]], atol=1e-5)
    gradient = jax.grad(lambda x: task.objective(x)[0])(jnp.array([0.1, 0.2, 0.3, 0.4]))
    assert bool(jnp.all(jnp.isfinite(gradient)))


def test_lp_sphere_formulas():
    task = make("lp-sphere", dimension=4)
    shift, bound = 2.048, 5.12
    genomes = jnp.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [shift] * 4,
            [-bound] * 4,
            [10.0, -10.0, 1.0, 2.0],
        ]
    )
    result = task.evaluate(genomes, jax.random.key(0), transitions=True)
    worst = 4 * (bound + shift) ** 2
    raw_last = (10 - shift) ** 2 + (10 + shift) ** 2 + (1 - shift) ** 2 + (2 - shift) ** 2
    expected = [
        100 * (1 - 4 * shift**2 / worst),
        100.0,
        0.0,
        100 * (1 - raw_last / worst),
    ]
    np.testing.assert_allclose(result.fitness, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        result.descriptors,
        [[0.0, 0.0], [2 * shift, 2 * shift], [-2 * bound, -2 * bound], [0.0, 3.0]],
        atol=1e-5,
    )
    steps = result.transitions
    assert steps.actions.shape == (4, 1, 4)
    assert steps.observations.shape == steps.next_observations.shape == (4, 1, 0)
    np.testing.assert_array_equal(steps.rewards[:, 0], result.fitness)
    assert bool(steps.terminated.all()) and not bool(steps.truncated.any())
    jacobian = jax.jacrev(lambda x: task.objective(x)[1])(genomes[3])
    assert bool(jnp.all(jnp.isfinite(jacobian)))


def test_vector_tasks_jit():
    task = make("lp-sphere", dimension=4)
    genomes = task.init_genomes(jax.random.key(0), 8)
    jitted = eqx.filter_jit(task.evaluate)(genomes, jax.random.key(0))
    eager = task.evaluate(genomes, jax.random.key(0))
    np.testing.assert_allclose(jitted.fitness, eager.fitness, rtol=1e-6)
    low, high = task.descriptor_bounds
    assert bool(jnp.all((eager.descriptors >= low) & (eager.descriptors <= high)))
