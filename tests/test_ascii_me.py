"""The ASCII operator (training/qd/emitters/ascii.py) and ``qdzoo train --algo ascii-me`` end
to end on the point maze: the update is the scaled vector-Jacobian product, the clipping,
metrics, resume, and the archive's per-elite extras saved, loaded and re-evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from qd_helpers import assert_resume_is_identical, read_log, train_cli_args

from models.policy import PolicySpec
from training.cli import main
from training.qd import algorithms
from training.qd.emitters.ascii import (
    ASCIIEmitter,
    ascii_loss,
    ascii_update,
    ascii_variation,
    ascii_weights,
    clipped_objective,
    rewards_to_go,
)
from training.qd.run import TrainConfig
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.evaluation import reevaluate
from zoo.tasks import make
from zoo.tasks.point_maze import START

SPEC = PolicySpec(observation_size=3, action_size=2, hidden_sizes=(4,))
T = 6
update_jit = jax.jit(ascii_update, static_argnames=("update", "adam_steps", "adam_learning_rate"))
variation_jit = jax.jit(
    ascii_variation, static_argnames=("update", "adam_steps", "adam_learning_rate")
)
loss_grad = jax.jit(jax.grad(lambda policy, trajectory, w: ascii_loss(policy, trajectory, w)[0]))


def _trajectory(key: jax.Array, action_scale: float = 2.5) -> dict[str, jax.Array]:
    """Random states, actions and rewards-to-go over ``T`` steps, the last one invalid."""
    k_s, k_a, k_g = jax.random.split(key, 3)
    return {
        "states": jax.random.normal(k_s, (T, 3)),
        "actions": jax.random.uniform(k_a, (T, 2), minval=-action_scale, maxval=action_scale),
        "rewards_to_go": 3.0 * jax.random.normal(k_g, (T,)),
        "valid": jnp.arange(T) < T - 1,
    }


def test_rewards_to_go_are_discounted_and_masked() -> None:
    rewards = jnp.array([[1.0, 1.0, 1.0, 5.0], [2.0, 0.0, 4.0, 1.0]])
    valid = jnp.array([[True, True, True, False], [True, True, True, True]])
    np.testing.assert_allclose(
        rewards_to_go(rewards, valid, 0.5), [[1.75, 1.5, 1.0, 0.0], [3.125, 2.25, 4.5, 1.0]]
    )


def test_weights_are_cosine_times_advantage_masked() -> None:
    parent = {
        "states": jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [1.0, 0.0]]),
        "rewards_to_go": jnp.array([1.0, 1.0, 1.0, 1.0]),
        "valid": jnp.array([True, True, True, False]),
    }
    other = {
        "states": jnp.array([[2.0, 0.0], [-1.0, -1.0], [3.0, 0.0], [1.0, 0.0]]),
        "rewards_to_go": jnp.array([4.0, 3.0, 9.0, 9.0]),
        "valid": jnp.array([True, True, True, True]),
    }
    # cos = 1, -1, 0, (invalid in the parent); advantages 3, 2, 8, 8
    np.testing.assert_allclose(ascii_weights(parent, other), [3.0, -2.0, 0.0, 0.0], atol=1e-6)


def test_clipping_on_hand_made_kernels_and_weights() -> None:
    kernel = jnp.array([0.5, 0.9, 0.5, 0.9])
    weights = jnp.array([2.0, 2.0, -2.0, -2.0])
    # Better actions (Z > 0): always r Z. Worse (Z < 0): r Z while close (r > 0.8), else
    # the constant 0.8 Z.
    np.testing.assert_allclose(
        clipped_objective(kernel, weights, 0.8), [1.0, 1.8, -1.6, -1.8], rtol=1e-6
    )
    grad = jax.grad(lambda r: jnp.sum(clipped_objective(r, weights, 0.8)))(kernel)
    np.testing.assert_allclose(grad, [2.0, 2.0, 0.0, -2.0])
    # Through the loss: the kernel of step t is set by how far the action is from the
    # policy's; clipped = weighted steps with Z < 0 and r < 0.8.
    policy = SPEC.init(jax.random.key(0))
    states = jax.random.normal(jax.random.key(1), (4, 3))
    mean = jax.vmap(policy)(states)
    # ||a - mu||^2 = 2 sigma^2 (-log r): offsets along the first action dimension.
    offsets = jnp.sqrt(2 * 4.0 * -jnp.log(kernel))
    actions = mean.at[:, 0].add(offsets)
    trajectory = {"states": states, "actions": actions}
    loss, aux = ascii_loss(policy, trajectory, weights, sigma=2.0, floor=0.8)
    np.testing.assert_allclose(loss, -jnp.mean(jnp.array([1.0, 1.8, -1.6, -1.8])), rtol=1e-5)
    np.testing.assert_allclose(aux["clipped"], 0.25)
    np.testing.assert_allclose(aux["kernel"], jnp.mean(kernel), rtol=1e-5)


def test_single_update_is_the_scaled_vector_jacobian_product() -> None:
    policy = SPEC.init(jax.random.key(0))
    parent = _trajectory(jax.random.key(1))
    other = _trajectory(jax.random.key(2))
    # Actions near the policy's at some steps, far at others: both sides of the floor.
    near_far = jnp.array([0.1, 2.5, 2.5, 0.1, 0.1, 2.5])[:, None] * jnp.array([1.0, -1.0])
    other["actions"] = jax.vmap(policy)(other["states"]) + near_far
    sigma, floor, alpha = 2.0, 0.8, 0.05
    child, stats = update_jit(
        policy, parent, other, update="single", step_size=alpha, sigma=sigma, floor=floor
    )

    # Explicitly: J [T * act, n] of the stacked actions, delta_a of the unclipped steps.
    flat, unravel = ravel_pytree(policy)
    actions_of = jax.jit(lambda theta: jax.vmap(unravel(theta))(other["states"]).reshape(-1))
    jacobian = jax.jit(jax.jacobian(actions_of))(flat)
    mean = jax.vmap(policy)(other["states"])
    weights = ascii_weights(parent, other)
    diff = other["actions"] - mean
    kernel = jnp.exp(-jnp.sum(diff**2, axis=-1) / (2 * sigma**2))
    active = (weights > 0) | (kernel > floor)
    assert bool(jnp.any(active & (weights < 0))) and bool(jnp.any(~active & (weights < 0)))
    delta = jnp.where(active, weights * kernel, 0.0)[:, None] * diff
    expected = flat + alpha / (T * sigma**2) * jacobian.T @ delta.reshape(-1)
    np.testing.assert_allclose(ravel_pytree(child)[0], expected, rtol=1e-5, atol=1e-6)
    assert float(stats["update_norm"]) > 0
    np.testing.assert_allclose(
        stats["update_norm"], jnp.linalg.norm(expected - flat), rtol=1e-4, atol=1e-7
    )


def test_adam_update_and_vmapped_variation() -> None:
    parents = SPEC.init_population(jax.random.key(0), 3)
    parent_extras = jax.vmap(_trajectory)(jax.random.split(jax.random.key(1), 3))
    trajectories = jax.vmap(_trajectory)(jax.random.split(jax.random.key(2), 3))
    options = {"update": "adam", "adam_steps": 1, "adam_learning_rate": 1e-2}
    children, stats = variation_jit(parents, parent_extras, trajectories, **options)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda x, i=i: x[i], (parents, parent_extras, trajectories))
        child, _ = update_jit(*one, **options)
        got = jax.tree_util.tree_map(lambda x, i=i: x[i], children)
        np.testing.assert_allclose(ravel_pytree(got)[0], ravel_pytree(child)[0], rtol=1e-6)
        # One Adam step from a fresh state moves every parameter by lr * sign(-gradient).
        weights = ascii_weights(one[1], one[2])
        grad = loss_grad(one[0], one[2], weights)
        step = ravel_pytree(child)[0] - ravel_pytree(one[0])[0]
        g = ravel_pytree(grad)[0]
        moved = jnp.abs(g) > 1e-4
        np.testing.assert_allclose(step[moved], -1e-2 * jnp.sign(g[moved]), rtol=1e-3)
    assert set(stats) >= {"abs_weight", "clipped", "kernel", "loss", "update_norm"}
    assert all(s.shape == () for s in stats.values())
    # More steps lower the loss on the sampled trajectory.
    one = jax.tree_util.tree_map(lambda x: x[0], (parents, parent_extras, trajectories))
    _, few = update_jit(*one, **options)
    _, many = update_jit(*one, **{**options, "adam_steps": 16})
    assert float(many["loss"]) < float(few["loss"])


def test_configuration_errors() -> None:
    algorithm = algorithms.get("ascii-me")
    with pytest.raises(ConfigError, match="genomes"):
        algorithm.build(make("lp-sphere"), 8, algorithm.hyperparameters())
    with pytest.raises(ConfigError, match="update must be one of"):
        ASCIIEmitter(size=4, buffer_trajectories=8, update="sgd")
    with pytest.raises(ConfigError, match="buffer_generations"):
        algorithm.build(make("point-maze"), 8, algorithm.hyperparameters({"buffer_generations": 0}))
    assert algorithm.defaults["update"] == "adam" and "adam" in algorithm.summary


# ----------------------------------------------------------------------------- end to end
BATCH = 8
EPISODE = 20
HYPERPARAMETERS = {"adam_steps": 4}
CONFIG = TrainConfig(
    task="point-maze",
    algorithm="ascii-me",
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
def ascii_me_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ascii-me") / "run"
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    return out


def test_ascii_me_runs_through_the_cli(ascii_me_run: Path) -> None:
    log = read_log(ascii_me_run)
    assert [row["iteration"] for row in log] == list(range(1, 7))
    names = ("abs_weight", "weighted", "kernel", "clipped", "loss", "update_norm")
    for row in log:
        for name in names:
            assert np.isfinite(row[f"ascii/{name}"]), name
        assert 0 <= row["ascii/clipped"] <= 1 and 0 <= row["ascii/kernel"] <= 1
        # The buffer holds the last generation: every offspring's trajectory.
        assert row["ascii/buffer_size"] == BATCH
    # Iteration 1 tells on the random initial batch: no ASCII offspring yet.
    assert all(log[0][f"ascii/{name}"] == 0 for name in names)
    assert all(row["ascii/update_norm"] > 0 and row["ascii/abs_weight"] > 0 for row in log[1:])
    config = json.loads((ascii_me_run / "config.json").read_text())
    assert config["algorithm"]["name"] == "ascii-me"
    assert config["algorithm"]["hyperparameters"]["adam_steps"] == 4
    assert config["algorithm"]["hyperparameters"]["update"] == "adam"


def test_ascii_me_extras_save_load_and_reevaluate(ascii_me_run: Path) -> None:
    artifact = load_archive(ascii_me_run)
    archive = artifact.archive
    occupied = np.asarray(archive.occupied)
    assert occupied.sum() > 3
    states = np.asarray(archive.extras["states"])
    togo = np.asarray(archive.extras["rewards_to_go"])
    valid = np.asarray(archive.extras["valid"])
    assert states.shape == (archive.num_cells, EPISODE, 2)
    assert togo.shape == valid.shape == (archive.num_cells, EPISODE)
    assert valid.dtype == bool
    # Every elite's trajectory starts at the maze's start; its rewards-to-go at step 0 are
    # its discounted return: between fitness (all rewards <= 0) and 0.
    np.testing.assert_allclose(states[occupied][:, 0], np.broadcast_to(START, (occupied.sum(), 2)))
    fitness = np.asarray(archive.fitness)[occupied]
    assert np.all(togo[occupied][:, 0] >= fitness - 1e-4) and np.all(togo[occupied][:, 0] < 0)
    assert np.all(valid[occupied][:, 0]) and not np.any(valid[~occupied])
    # Re-evaluation with the recorded protocol reproduces the archive.
    again = reevaluate(artifact)
    np.testing.assert_allclose(again.fitness, fitness, rtol=1e-5, atol=1e-5)


def test_ascii_me_resume_is_identical(ascii_me_run: Path, tmp_path: Path) -> None:
    assert_resume_is_identical(CONFIG, ascii_me_run, tmp_path / "run", stop_after=4 * BATCH)
