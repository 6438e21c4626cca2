"""TD3 (training/td3.py), the policy-gradient emitter and ``qdzoo train --algo pga-me`` end to
end on the point maze: metrics, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from qd_helpers import assert_resume_is_identical, read_log, train_cli_args

from models.critic import TwinCritic
from models.policy import PolicySpec
from training import replay, td3
from training.cli import main
from training.qd import algorithms
from training.qd.emitters.policy_gradient import (
    PolicyGradientEmitter,
    policy_gradient_variation,
    resolve_preset,
)
from training.qd.run import TrainConfig
from training.rundir import CHECKPOINT_DIR
from zoo.archive import Archive
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.tasks import make
from zoo.tasks.base import Transitions

SPEC = PolicySpec(observation_size=2, action_size=2, hidden_sizes=(8,))
SMALL = td3.TD3Config(critic_hidden_sizes=(16, 16), batch_size=32)
train_jit = eqx.filter_jit(td3.train)  # Python ints (steps) are static: one compile per length


def _same(a: Any, b: Any) -> bool:
    return all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def _buffer(key: jax.Array, n: int = 64) -> replay.ReplayBuffer:
    """``n`` hand-made transitions: reward = sum of the observation, half terminal."""
    k_obs, k_act, k_next = jax.random.split(key, 3)
    observation = jax.random.uniform(k_obs, (n, 2), minval=-1, maxval=1)
    rows = {
        "observation": observation,
        "action": jax.random.uniform(k_act, (n, 2), minval=-1, maxval=1),
        "reward": observation.sum(axis=1),
        "next_observation": jax.random.uniform(k_next, (n, 2), minval=-1, maxval=1),
        "terminated": (jnp.arange(n) % 2).astype(jnp.float32),
    }
    return replay.add(replay.init(td3.transition_template(2, 2), 128), rows)


def test_targets_bootstrap_unless_terminated() -> None:
    config = td3.TD3Config(critic_hidden_sizes=(8,), policy_noise=1e6, noise_clip=0.5)
    state = td3.init(jax.random.key(0), SPEC.init(jax.random.key(1)), config)
    batch = replay.sample(_buffer(jax.random.key(2)), jax.random.key(3), 16)
    key = jax.random.key(4)
    targets = td3.critic_targets(state, batch, key)
    # The smoothing noise is clipped at noise_clip, the action then clipped to [-1, 1].
    next_action = jax.vmap(state.target_actor)(batch["next_observation"])
    noise = jnp.clip(1e6 * jax.random.normal(key, next_action.shape), -0.5, 0.5)
    next_action = jnp.clip(next_action + noise, -1, 1)
    q = jax.vmap(state.target_critic)(batch["next_observation"], next_action).min(axis=1)
    expected = batch["reward"] + 0.99 * (1 - batch["terminated"]) * q
    np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-6)
    terminal = batch["terminated"] == 1
    assert terminal.any() and (~terminal).any()
    np.testing.assert_array_equal(targets[terminal], batch["reward"][terminal])


def test_truncated_steps_are_stored_as_not_terminated() -> None:
    shape = (2, 3)
    terminated = jnp.zeros(shape, bool).at[0, 1].set(True)
    truncated = jnp.zeros(shape, bool).at[1, 2].set(True)
    transitions = Transitions(
        observations=jnp.ones((*shape, 2)),
        actions=jnp.ones((*shape, 2)),
        rewards=jnp.arange(6.0).reshape(shape),
        next_observations=jnp.ones((*shape, 2)),
        terminated=terminated,
        truncated=truncated,
        valid=jnp.ones(shape, bool).at[0, 2].set(False),
    )
    rows, valid = td3.flatten_transitions(transitions)
    np.testing.assert_array_equal(rows["terminated"], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(valid, [1, 1, 0, 1, 1, 1])
    assert rows["observation"].shape == (6, 2) and rows["reward"].shape == (6,)


def test_critic_loss_falls() -> None:
    config = td3.TD3Config(critic_hidden_sizes=(32, 32), critic_learning_rate=3e-3, batch_size=64)
    state = td3.init(jax.random.key(0), SPEC.init(jax.random.key(1)), config)
    buffer = _buffer(jax.random.key(2))
    _, before = train_jit(state, buffer, jax.random.key(3), 1)
    trained, _ = train_jit(state, buffer, jax.random.key(4), 300)
    _, after = train_jit(trained, buffer, jax.random.key(5), 1)
    assert int(trained.steps) == 300
    assert float(after["critic_loss"]) < 0.2 * float(before["critic_loss"])


def test_policy_delay() -> None:
    state = td3.init(jax.random.key(0), SPEC.init(jax.random.key(1)), SMALL)
    buffer = _buffer(jax.random.key(2))
    one, metrics = train_jit(state, buffer, jax.random.key(3), 1)
    assert int(one.steps) == 1 and float(metrics["actor_loss"]) == 0.0
    assert not _same(one.critic, state.critic)
    # Update 1 of 2: the actor and both targets wait.
    for name in ("actor", "target_actor", "target_critic", "actor_opt_state"):
        assert _same(getattr(one, name), getattr(state, name)), name
    # Update 2 of 2: the actor steps and the targets move towards the online networks.
    two, metrics = train_jit(one, buffer, jax.random.key(3), 1)
    assert int(two.steps) == 2 and float(metrics["actor_loss"]) != 0.0
    for name in ("actor", "target_actor", "target_critic"):
        assert not _same(getattr(two, name), getattr(one, name)), name
    # A scan of 2 from the start is the same two updates (keys are numbered by the step).
    scanned, _ = train_jit(state, buffer, jax.random.key(3), 2)
    assert _same(scanned.actor, two.actor) and _same(scanned.critic, two.critic)


def test_policy_gradient_steps_ascend_the_critic() -> None:
    critic = TwinCritic(2, 2, (16,), key=jax.random.key(0))
    parents = SPEC.init_population(jax.random.key(1), 3)
    buffer = _buffer(jax.random.key(2))
    children, loss = policy_gradient_variation(
        jax.random.key(3), parents, critic, buffer, 20, 1e-2, 32
    )
    observations = buffer.data["observation"][:64]
    for i in range(3):
        child = jax.tree_util.tree_map(lambda x, i=i: x[i], children)
        parent = jax.tree_util.tree_map(lambda x, i=i: x[i], parents)
        assert td3.actor_loss(child, critic, observations) < td3.actor_loss(
            parent, critic, observations
        )
    assert jnp.isfinite(loss)


def test_ask_injects_the_greedy_actor() -> None:
    emitter = PolicyGradientEmitter(size=4, td3_config=SMALL, pg_steps=2, buffer_size=128)
    archive = Archive.grid(SPEC.template(), (4, 4), (-1.0, -1.0), (1.0, 1.0))
    population = SPEC.init_population(jax.random.key(0), 8)
    descriptors = jax.random.uniform(jax.random.key(1), (8, 2), minval=-1, maxval=1)
    archive, _ = archive.insert(population, jnp.arange(8.0), descriptors)
    state = emitter.init(jax.random.key(2), archive)
    state = {**state, "buffer": _buffer(jax.random.key(3))}
    genomes, _ = emitter.ask(jax.random.key(4), state, archive, None)  # type: ignore[arg-type]
    assert genomes.weights[0].shape == (4, 8, 2)
    last = jax.tree_util.tree_map(lambda x: x[-1], genomes)
    assert _same(last, state["learner"].actor)


def test_presets_and_errors() -> None:
    hp = algorithms.get("pga-me").hyperparameters({"preset": "paper", "pg_steps": 7})
    resolved = resolve_preset(hp)
    assert resolved["critic_steps"] == 3000 and resolved["transition_batch"] == 100
    assert resolved["policy_learning_rate"] == 5e-3 and resolved["pg_steps"] == 7
    assert resolve_preset(algorithms.get("pga-me").hyperparameters())["critic_steps"] == 300
    with pytest.raises(ConfigError, match="preset must be one of"):
        resolve_preset({**hp, "preset": "fast"})
    with pytest.raises(ConfigError, match="genomes"):
        algorithms.get("pga-me").build(make("lp-sphere"), 8, hp)


# ----------------------------------------------------------------------------- end to end
BATCH = 8
EPISODE = 20
HYPERPARAMETERS = {
    "critic_hidden_sizes": [16, 16],
    "critic_steps": 6,
    "pg_steps": 3,
    "transition_batch": 32,
    "buffer_size": 1000,
}
CONFIG = TrainConfig(
    task="point-maze",
    algorithm="pga-me",
    evaluations=6 * BATCH,
    batch_size=BATCH,
    grid=(5, 5),
    task_kwargs={"episode_length": EPISODE},
    hyperparameters=HYPERPARAMETERS,
    policy={"hidden_sizes": [8]},
    seed=1,
    chunk=2,
)
CLI_ARGS = train_cli_args(CONFIG)


@pytest.fixture(scope="module")
def pga_me_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pga-me") / "run"
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    return out


def test_pga_me_runs_through_the_cli(pga_me_run: Path) -> None:
    log = read_log(pga_me_run)
    assert [row["iteration"] for row in log] == list(range(1, 7))
    for row in log:
        for name in ("pg/critic_loss", "pg/actor_loss", "pg/pg_loss"):
            assert np.isfinite(row[name]), name
    # Every offspring's transitions fill the buffer, not only the PG half's: random
    # policies do not reach the goal in 20 steps, so the first batch gives about 8 x 20.
    sizes = [row["pg/buffer_size"] for row in log]
    assert BATCH // 2 * EPISODE < sizes[0] <= BATCH * EPISODE
    assert all(b > a for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    config = json.loads((pga_me_run / "config.json").read_text())
    assert config["algorithm"]["name"] == "pga-me"
    assert config["algorithm"]["hyperparameters"]["critic_steps"] == 6
    assert (pga_me_run / CHECKPOINT_DIR).is_dir()
    assert load_archive(pga_me_run).archive.occupied.sum() > 1


def test_pga_me_resume_is_identical(pga_me_run: Path, tmp_path: Path) -> None:
    assert_resume_is_identical(CONFIG, pga_me_run, tmp_path / "run", stop_after=4 * BATCH)
