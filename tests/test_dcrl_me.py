"""DCRL-ME: descriptor-conditioned models and their fold into plain policies, reward
reshaping, the DCRL emitter, and ``qdzoo train --algo dcrl-me`` end to end on the point maze
(metrics, resume, save / load / re-evaluation)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden_map_elites import archive_digest
from qd_helpers import assert_resume_is_identical, read_log, train_cli_args

from models.conditioned import (
    condition,
    conditioned_critic,
    conditioned_spec,
    fold_descriptor,
    normalise_descriptors,
)
from models.policy import MLPPolicy, PolicySpec
from training import replay, td3
from training.cli import main
from training.qd import algorithms
from training.qd.emitters.dcrl import (
    DCRLEmitter,
    conditioned_minibatch,
    conditioned_policy_gradient_variation,
    conditioned_rows,
    conditioned_template,
)
from training.qd.run import TrainConfig
from zoo.archive import Archive
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.evaluation import reevaluate
from zoo.tasks import make
from zoo.tasks.base import Evaluation, Transitions
from zoo.tasks.point_maze import MAX_DISTANCE

SPEC = PolicySpec(observation_size=2, action_size=2, hidden_sizes=(8,))
SMALL = td3.TD3Config(critic_hidden_sizes=(16, 16), batch_size=8)
LOW, HIGH = (-2.0, -2.0), (2.0, 2.0)


# --------------------------------------------------------------------------------- models
@pytest.mark.parametrize("normalise", [False, True])
def test_folded_actor_acts_like_the_conditioned_actor(normalise: bool) -> None:
    spec = dataclasses.replace(SPEC, hidden_sizes=(8, 8), normalise_observations=normalise)
    actor = conditioned_spec(spec, 3).init(jax.random.key(0))
    # Non-zero biases and normaliser statistics, so that every part of the fold matters.
    keys = jax.random.split(jax.random.key(1), 5)
    biases = tuple(
        0.5 * jax.random.normal(k, b.shape) for k, b in zip(keys, actor.biases, strict=False)
    )
    actor = eqx.tree_at(lambda p: p.biases, actor, biases)
    if normalise:
        actor = eqx.tree_at(
            lambda p: (p.obs_mean, p.obs_std),
            actor,
            (
                jax.random.normal(keys[3], (5,)),
                jax.random.uniform(keys[4], (5,), minval=0.5, maxval=2),
            ),
        )
    descriptors = jax.random.uniform(jax.random.key(2), (4, 3), minval=-1, maxval=1)
    observations = jax.random.normal(jax.random.key(3), (16, 2))
    folded = jax.vmap(fold_descriptor, in_axes=(None, 0))(actor, descriptors)
    # A population of ordinary genomes of the archive's spec.
    one = jax.tree_util.tree_map(lambda x: x[0], folded)
    assert isinstance(one, MLPPolicy)
    template = spec.template()
    assert jax.tree_util.tree_structure(one) == jax.tree_util.tree_structure(template)
    for got, want in zip(
        jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(template), strict=True
    ):
        assert got.shape == want.shape
    actions = []
    for i in range(4):
        policy = jax.tree_util.tree_map(lambda x, i=i: x[i], folded)
        got = jax.vmap(policy)(observations)
        want = jax.vmap(lambda s, i=i: actor(condition(s, descriptors[i])))(observations)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        actions.append(got)
    # The descriptor matters: different targets, different policies.
    assert not np.allclose(actions[0], actions[1], atol=1e-3)
    with pytest.raises(ValueError, match="descriptor vector"):
        fold_descriptor(actor, descriptors)


def test_conditioned_sizes_and_normalisation() -> None:
    assert conditioned_spec(SPEC, 2).observation_size == 4
    critic = conditioned_critic(2, 2, 3, (16,), key=jax.random.key(0))
    assert critic.first.layers[0].in_features == 2 + 3 + 2
    np.testing.assert_allclose(
        normalise_descriptors(jnp.array([[-2.0, 2.0], [0.0, 1.0]]), LOW, HIGH),
        [[-1.0, 1.0], [0.0, 0.5]],
    )
    with pytest.raises(ValueError, match="descriptor_size"):
        conditioned_spec(SPEC, 0)


# ------------------------------------------------------------------------ reward reshaping
def test_rewards_are_offset_clipped_and_scaled_by_similarity() -> None:
    batch = {
        "observation": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        "action": jnp.zeros((3, 2)),
        "reward": jnp.array([1.0, -3.0, 0.5]),
        "next_observation": jnp.array([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]]),
        "terminated": jnp.array([0.0, 1.0, 0.0]),
        "descriptor": jnp.array([[0.0, 0.0], [0.5, 0.5], [0.3, 0.4]]),
        "target_descriptor": jnp.array([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]]),
    }
    out = conditioned_minibatch(batch, lengthscale=0.1, reward_offset=2.0)
    # Row 0: on target, 1 + 2. Row 1: on target, -3 + 2 clipped to 0. Row 2: 0.5 away.
    np.testing.assert_allclose(out["reward"], [3.0, 0.0, np.exp(-5.0) * 2.5], rtol=1e-6)
    np.testing.assert_array_equal(
        out["observation"], [[1, 2, 0, 0], [3, 4, 0.5, 0.5], [5, 6, 0, 0]]
    )
    np.testing.assert_array_equal(
        out["next_observation"], [[7, 8, 0, 0], [9, 10, 0.5, 0.5], [11, 12, 0, 0]]
    )
    assert set(out) == set(td3.transition_template(2, 2))
    np.testing.assert_array_equal(out["terminated"], batch["terminated"])


def _transitions(batch: int, time: int, key: jax.Array) -> Transitions:
    k_obs, k_act, k_rew = jax.random.split(key, 3)
    shape = (batch, time)
    return Transitions(
        observations=jax.random.normal(k_obs, (*shape, 2)),
        actions=jax.random.uniform(k_act, (*shape, 2), minval=-1, maxval=1),
        rewards=-jax.random.uniform(k_rew, shape, maxval=2.0),
        next_observations=jax.random.normal(k_obs, (*shape, 2)),
        terminated=jnp.zeros(shape, bool),
        truncated=jnp.zeros(shape, bool).at[:, -1].set(True),
        valid=jnp.ones(shape, bool),
    )


def test_rows_carry_their_episode_descriptors() -> None:
    transitions = _transitions(2, 3, jax.random.key(0))
    transitions = eqx.tree_at(lambda t: t.valid, transitions, transitions.valid.at[1, 2].set(False))
    achieved = jnp.array([[0.1, 0.2], [0.3, 0.4]])
    targets = jnp.array([[-0.1, -0.2], [-0.3, -0.4]])
    rows, valid = conditioned_rows(transitions, achieved, targets)
    np.testing.assert_array_equal(rows["descriptor"], jnp.repeat(achieved, 3, axis=0))
    np.testing.assert_array_equal(rows["target_descriptor"], jnp.repeat(targets, 3, axis=0))
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 0])
    assert set(rows) == set(conditioned_template(2, 2, 2))


# -------------------------------------------------------------------------------- emitter
def test_conditioned_policy_gradient_ascends_the_critic_at_each_target() -> None:
    critic = conditioned_critic(2, 2, 2, (16,), key=jax.random.key(0))
    parents = SPEC.init_population(jax.random.key(1), 3)
    targets = jnp.array([[-0.5, 0.5], [0.5, -0.5], [0.9, 0.9]])
    rows, valid = conditioned_rows(
        _transitions(4, 8, jax.random.key(2)), jnp.zeros((4, 2)), jnp.zeros((4, 2))
    )
    buffer = replay.add(replay.init(conditioned_template(2, 2, 2), 64), rows, valid)
    children, loss = conditioned_policy_gradient_variation(
        jax.random.key(3), parents, targets, critic, buffer, 10, 1e-2, 16
    )
    observations = rows["observation"]
    for i in range(3):
        child, parent = (
            jax.tree_util.tree_map(lambda x, i=i: x[i], p) for p in (children, parents)
        )
        conditioned = condition(observations, jnp.broadcast_to(targets[i], observations.shape))
        assert td3.actor_loss(child, critic, observations, conditioned) < td3.actor_loss(
            parent, critic, observations, conditioned
        )
    assert jnp.isfinite(loss)


def _emitter(**overrides: object) -> DCRLEmitter:
    settings: dict[str, object] = {
        "pg_size": 3,
        "ai_size": 2,
        "td3_config": SMALL,
        "descriptor_low": LOW,
        "descriptor_high": HIGH,
        "reward_offset": 2.5,
        "critic_steps": 2,
        "pg_steps": 2,
        "buffer_size": 256,
        "batch_offset": 2,
    }
    return DCRLEmitter(**{**settings, **overrides})  # type: ignore[arg-type]


def _archive() -> Archive:
    archive = Archive.grid(SPEC.template(), (4, 4), LOW, HIGH)
    population = SPEC.init_population(jax.random.key(0), 8)
    descriptors = jax.random.uniform(jax.random.key(1), (8, 2), minval=-2, maxval=2)
    archive, _ = archive.insert(population, jnp.arange(8.0), descriptors)
    return archive


def _evaluation(batch: int, key: jax.Array) -> Evaluation:
    k_t, k_d = jax.random.split(key)
    return Evaluation(
        fitness=jnp.zeros((batch,)),
        descriptors=jax.random.uniform(k_d, (batch, 2), minval=-2, maxval=2),
        transitions=_transitions(batch, 3, k_t),
    )


def test_tell_pairs_each_episode_with_its_target_and_ask_injects_folded_actors() -> None:
    emitter, archive = _emitter(), _archive()
    state = emitter.init(jax.random.key(2), archive)
    tell, ask = eqx.filter_jit(emitter.tell), eqx.filter_jit(emitter.ask)
    # The first tell sees genomes nobody asked for: every episode's target is its own.
    first = _evaluation(7, jax.random.key(3))
    state, metrics = tell(jax.random.key(4), state, archive, None, first, None, None)  # type: ignore[arg-type]
    rows = state["buffer"].data
    np.testing.assert_array_equal(rows["target_descriptor"][:21], rows["descriptor"][:21])
    np.testing.assert_allclose(
        rows["descriptor"][:21], jnp.repeat(first.descriptors / 2.0, 3, axis=0), rtol=1e-6
    )
    for name in ("critic_loss", "actor_loss", "pg_loss"):
        assert np.isfinite(metrics[name]), name
    assert int(metrics["buffer_size"]) == 21

    genomes, state = ask(jax.random.key(5), state, archive, None)  # type: ignore[arg-type]
    assert genomes.weights[0].shape == (5, 8, 2) and bool(state["asked"])
    targets = state["targets"]
    elites = normalise_descriptors(archive.descriptors[archive.occupied], LOW, HIGH)
    distance = jnp.min(jnp.linalg.norm(targets[:, None] - elites[None], axis=-1), axis=1)
    np.testing.assert_allclose(distance, 0.0, atol=1e-6)  # every target is an elite's
    actor = state["learner"].actor
    for i in (3, 4):  # the injected actors
        injected = jax.tree_util.tree_map(lambda x, i=i: x[i], genomes)
        expected = fold_descriptor(actor, targets[i])
        for got, want in zip(
            jax.tree_util.tree_leaves(injected), jax.tree_util.tree_leaves(expected), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    # The emitter's own rows (2..6 of the whole batch) carry the targets it asked for.
    second = _evaluation(7, jax.random.key(6))
    state, metrics = tell(jax.random.key(7), state, archive, None, second, None, None)  # type: ignore[arg-type]
    new = jax.tree_util.tree_map(
        lambda x: x[21:42].reshape(7, 3, *x.shape[1:]), state["buffer"].data
    )
    achieved = second.descriptors / 2.0
    np.testing.assert_allclose(new["descriptor"][:, 0], achieved, rtol=1e-6)
    np.testing.assert_allclose(new["target_descriptor"][:2, 0], achieved[:2], rtol=1e-6)
    np.testing.assert_array_equal(new["target_descriptor"][2:, 0], targets)
    assert int(metrics["buffer_size"]) == 42


def test_registry_entry_and_errors() -> None:
    algorithm = algorithms.get("dcrl-me")
    assert "Faldor" in algorithm.citation
    task = make("point-maze", episode_length=10)
    emitter = algorithm.build(task, 256, algorithm.hyperparameters())
    ga, dcrl = emitter.emitters  # type: ignore[attr-defined]
    assert (ga.batch_size, dcrl.pg_size, dcrl.ai_size, dcrl.batch_offset) == (128, 64, 64, 128)
    assert (dcrl.critic_steps, dcrl.pg_steps, dcrl.td3_config.batch_size) == (3000, 150, 100)
    assert dcrl.policy_learning_rate == 5e-3 and dcrl.lengthscale == 0.1
    # The task's per-step reward lower bound: point-maze rewards are -distance >= -2.3431.
    assert dcrl.reward_offset == pytest.approx(MAX_DISTANCE)
    qdax = algorithm.build(task, 8, algorithm.hyperparameters({"preset": "qdax"}))
    assert qdax.emitters[1].critic_steps == 300  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="genomes"):
        algorithm.build(make("lp-sphere"), 8, algorithm.hyperparameters())
    with pytest.raises(ConfigError, match="reward_offset"):
        algorithm.build(task, 8, algorithm.hyperparameters({"reward_offset": "high"}))
    with pytest.raises(ConfigError, match="batch_offset"):  # rows 4..8 of a batch of 7
        evaluation = _evaluation(7, jax.random.key(2))
        _emitter(batch_offset=4).tell(jax.random.key(0), None, None, None, evaluation, None, None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- end to end
BATCH = 8
CONFIG = TrainConfig(
    task="point-maze",
    algorithm="dcrl-me",
    evaluations=6 * BATCH,
    batch_size=BATCH,
    grid=(5, 5),
    task_kwargs={"episode_length": 20},
    hyperparameters={
        "critic_hidden_sizes": [16, 16],
        "critic_steps": 6,
        "pg_steps": 3,
        "transition_batch": 8,
        "buffer_size": 1000,
    },
    policy={"hidden_sizes": [8]},
    seed=1,
    chunk=2,
)
CLI_ARGS = train_cli_args(CONFIG)


@pytest.fixture(scope="module")
def dcrl_me_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dcrl-me") / "run"
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    return out


def test_dcrl_me_runs_through_the_cli(dcrl_me_run: Path) -> None:
    log = read_log(dcrl_me_run)
    assert [row["iteration"] for row in log] == list(range(1, 7))
    for row in log:
        for name in ("dcrl/critic_loss", "dcrl/actor_loss", "dcrl/pg_loss"):
            assert np.isfinite(row[name]), name
    sizes = [row["dcrl/buffer_size"] for row in log]
    assert BATCH // 2 * 20 < sizes[0] <= BATCH * 20  # every offspring's transitions
    assert all(b > a for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    config = json.loads((dcrl_me_run / "config.json").read_text())
    assert config["algorithm"]["name"] == "dcrl-me"
    assert config["algorithm"]["hyperparameters"]["critic_steps"] == 6
    assert load_archive(dcrl_me_run).archive.occupied.sum() > 1


def test_dcrl_me_resume_is_identical(dcrl_me_run: Path, tmp_path: Path) -> None:
    assert_resume_is_identical(CONFIG, dcrl_me_run, tmp_path / "run", stop_after=4 * BATCH)


def test_dcrl_me_archive_saves_loads_and_reevaluates(dcrl_me_run: Path, tmp_path: Path) -> None:
    artifact = load_archive(dcrl_me_run)
    copy = load_archive(artifact.save_pretrained(tmp_path / "copy"))
    assert archive_digest(copy.archive) == archive_digest(artifact.archive)
    result = reevaluate(copy)
    assert result.cells.size == int(artifact.archive.occupied.sum())
    np.testing.assert_allclose(result.fitness, result.stored_fitness, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.descriptors, result.stored_descriptors, atol=1e-5)
