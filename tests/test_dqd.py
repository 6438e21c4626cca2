"""Gradient-based QD: gradients (exact, ES-estimated), CMA-MEGA's gradient arborescence and
ME-ES, unit by unit and end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.cli import main
from training.qd import algorithms
from training.qd.emitters.gradient_arborescence import GradientArborescenceEmitter
from training.qd.emitters.gradients import (
    centred_ranks,
    es_jacobian,
    exact_jacobian,
    normalise_rows,
    task_objective,
)
from training.qd.emitters.me_es import novelty
from training.qd.run import Run, TrainConfig, train
from training.rundir import METRICS_LOG
from zoo.archive import Archive
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.tasks import make
from zoo.tasks.base import Evaluation


def test_exact_jacobian_matches_finite_differences() -> None:
    task = make("lp-sphere", dimension=6)
    objective = task_objective(task)
    x = jax.random.uniform(jax.random.key(0), (2, 6), minval=-3, maxval=3)
    jac = exact_jacobian(objective, x)
    assert jac.shape == (2, 3, 6)

    def stacked(v: jax.Array) -> jax.Array:
        f, d = objective(v)
        return jnp.concatenate([f[None], d])

    h = 1e-2
    for i in range(6):
        e = jnp.zeros(6).at[i].set(h)
        numeric = (stacked(x[0] + e) - stacked(x[0] - e)) / (2 * h)
        np.testing.assert_allclose(jac[0, :, i], numeric, rtol=2e-2, atol=2e-2)
    with pytest.raises(ConfigError, match="cma-mega-es"):
        task_objective(make("point-maze"))


def test_centred_ranks() -> None:
    ranks = centred_ranks(jnp.array([3.0, -1.0, 10.0, 0.0, 2.0]))
    np.testing.assert_allclose(ranks, [0.25, -0.5, 0.5, -0.25, 0.0])


def test_es_jacobian_points_along_the_true_gradient() -> None:
    """On linear outputs the rank-based estimate is parallel to the true gradients."""
    n = 8
    directions = jax.random.normal(jax.random.key(1), (3, n))

    def evaluate(genomes: jax.Array, key: jax.Array, *, transitions: bool = False) -> Evaluation:
        values = genomes @ directions.T
        return Evaluation(fitness=values[:, 0], descriptors=values[:, 1:])

    points = jnp.zeros((2, n))
    jac = es_jacobian(evaluate, jnp.zeros(n), points, jax.random.key(2), samples=400, sigma=0.1)
    unit = normalise_rows(jac)
    truth = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    cosines = jnp.einsum("pkn,kn->pk", unit, truth)
    assert bool(jnp.all(cosines > 0.9)), cosines


def test_arborescence_ask_is_theta_plus_coefficients_times_jacobian() -> None:
    task = make("lp-sphere", dimension=6)
    emitter = GradientArborescenceEmitter(
        num_emitters=2,
        population=4,
        num_coefficients=3,
        sigma0=1.0,
        learning_rate=1.0,
        objective=task_objective(task),
    )
    run_archive = _empty_archive(task)
    state = emitter.init(jax.random.key(0), run_archive)
    theta = jax.random.normal(jax.random.key(1), (2, 6))
    state = state.__class__(**{**vars(state), "theta": theta})
    genomes, state = emitter.ask(jax.random.key(3), state, run_archive, _no_evaluate)
    assert genomes.shape == (emitter.batch_size, 6) == (10, 6)
    batch = genomes.reshape(2, 5, 6)
    np.testing.assert_array_equal(batch[:, 0], theta)  # the solution point comes first
    jac = normalise_rows(exact_jacobian(task_objective(task), theta))
    expected = theta[:, None] + jnp.einsum("epk,ekn->epn", state.sampled, jac)
    np.testing.assert_allclose(batch[:, 1:], expected, rtol=1e-5, atol=1e-5)
    assert state.sampled.shape == (2, 4, 3)
    assert bool(jnp.all(state.coefficients.mean == 0))  # coefficient ES starts at 0


def _no_evaluate(genomes: object, key: jax.Array, *, transitions: bool = False) -> Evaluation:
    raise AssertionError("exact gradients evaluate nothing outside the archive")


def _empty_archive(task: object) -> Archive:
    del task
    config = TrainConfig(
        task="lp-sphere",
        algorithm="cma-mega",
        batch_size=10,
        grid=(5, 5),
        task_kwargs={"dimension": 6},
        hyperparameters={"num_emitters": 2},
    )
    return Run(config).empty_archive()


def test_novelty_is_the_mean_distance_to_the_nearest_neighbours() -> None:
    buffer = jnp.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [100.0, 0.0]])
    x = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    # Only the first three rows are in use; two neighbours.
    np.testing.assert_allclose(novelty(x, buffer, jnp.asarray(3), 2), [0.5, 1.0])
    # Fewer rows than neighbours: the mean over those there are; none: 0.
    np.testing.assert_allclose(novelty(x, buffer, jnp.asarray(1), 2), [0.0, 2.0])
    np.testing.assert_allclose(novelty(x, buffer, jnp.asarray(0), 2), [0.0, 0.0])


def test_cma_mega_fills_lp_sphere_far_faster_than_map_elites(tmp_path: Path) -> None:
    """Equal evaluations on a 20-dimensional LP-sphere: exact-gradient CMA-MEGA covers many
    times more of a 20x20 grid than MAP-Elites."""
    coverage = {}
    for algo, hp in (("cma-mega", {"num_emitters": 2}), ("map-elites", {})):
        config = TrainConfig(
            task="lp-sphere",
            algorithm=algo,
            evaluations=24 * 30,
            batch_size=24,
            grid=(20, 20),
            task_kwargs={"dimension": 20},
            hyperparameters=hp,
            chunk=30,
        )
        artifact = train(config, tmp_path / algo, progress=False, save=False)
        coverage[algo] = float(artifact.archive.metrics()["coverage"])
    assert coverage["cma-mega"] > 3 * coverage["map-elites"], coverage


def test_coefficient_es_restarts_when_nothing_is_accepted(tmp_path: Path) -> None:
    """Restart rule ``no_improvement``: an instance none of whose offspring entered the
    archive restarts (counted in the metrics); ``basic`` leaves it to the CMA-ES's rules."""
    config = TrainConfig(
        task="lp-sphere",
        algorithm="cma-mega",
        evaluations=12 * 6,
        batch_size=12,
        grid=(2, 2),  # four cells fill at once: later offspring mostly bounce off
        task_kwargs={"dimension": 6},
        hyperparameters={"num_emitters": 2, "sigma0": 1e-3, "learning_rate": 1e-3},
        chunk=6,
    )
    restarts = {}
    for rule in ("no_improvement", "basic"):
        hp = {**config.hyperparameters, "restart_rule": rule}
        cfg = TrainConfig(**{**config.to_dict(), "hyperparameters": hp})
        run_dir = tmp_path / rule
        train(cfg, run_dir, overwrite=True, progress=False, save=False)
        rows = [json.loads(r) for r in (run_dir / METRICS_LOG).read_text().splitlines()]
        restarts[rule] = rows[-1]["restarts"]
    assert restarts["no_improvement"] > restarts["basic"] == 0, restarts


@pytest.mark.parametrize(
    ("algo", "task", "batch", "extra"),
    [
        ("cma-mega", "arm", 12, ["--set", "num_emitters=2"]),
        ("cma-mega-es", "point-maze", 12, ["--set", "num_emitters=2", "--set", "es_samples=4"]),
        ("me-es", "point-maze", 2, ["--set", "samples=4", "--set", "steps_per_parent=2"]),
        (
            "cma-mega-td3-es",
            "point-maze",
            12,
            [
                *("--set", "num_emitters=2", "--set", "es_samples=4", "--set", "critic_steps=3"),
                *("--set", "transition_batch=16", "--set", "critic_hidden_sizes=[8, 8]"),
                *("--set", "buffer_size=500"),
            ],
        ),
    ],
)
def test_runs_through_the_cli_saves_and_counts_its_evaluations(
    algo: str, task: str, batch: int, extra: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    policy = ["--hidden", "4", "--episode-length", "10"] if task == "point-maze" else []
    args = [
        "train",
        "--task",
        task,
        "--algo",
        algo,
        "--evaluations",
        "100",
        "--batch-size",
        str(batch),
        "--grid",
        "4",
        "4",
        "--chunk",
        "3",
        "--quiet",
        "--out",
        str(out),
        *policy,
        *extra,
    ]
    assert main(args) == 0
    artifact = load_archive(out)
    assert artifact.archive.occupied.sum() >= 1
    training = artifact.config["training"]
    emitter = algorithms.get(algo)
    assert training["evaluations"] >= 100
    per_iteration = training["evaluations_per_iteration"]
    # Evaluations outside the archive (gradient estimates) are counted in the budget.
    assert (per_iteration > batch) == (algo != "cma-mega"), (emitter.name, per_iteration)
    rows = [json.loads(r) for r in (out / METRICS_LOG).read_text().splitlines()]
    assert rows[-1]["evaluations"] == training["evaluations"]
    if algo == "cma-mega-td3-es":  # the critic learns from every batch's transitions
        assert np.isfinite(rows[-1]["critic_loss"]) and rows[-1]["buffer_size"] > 0
