"""The imagination emitter, DA-QD-ext and GDA-QD (``qdzoo train --algo da-qd-ext | gda-qd``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from qd_helpers import assert_resume_is_identical, read_log, train_cli_args

from models.policy import PolicySpec
from training import dynamics
from training.cli import main
from training.qd import algorithms
from training.qd.emitters.imagination import ImaginationEmitter, dynamics_rows
from training.qd.run import TrainConfig
from zoo.archive import Archive
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.tasks import make
from zoo.tasks.point_maze import move

EPISODE = 10
SPEC = PolicySpec(observation_size=2, action_size=2, hidden_sizes=(8,))
TINY_MODEL = dynamics.DynamicsConfig(
    members=2, hidden_sizes=(16, 16), batch_size=32, steps=20, eval_every=10
)


class PerfectImagination(ImaginationEmitter):
    """Imagination in the true point-maze dynamics (``model_step`` = :func:`move`)."""

    def imagined_task(self, model: Any) -> Any:
        del model
        from zoo.tasks.imagined import ImaginedTask

        def model_step(key: Any, x: Any, actions: Any, members: Any) -> Any:
            del key, members
            return move(x, actions)

        return ImaginedTask(self.task, model_step, members=1, sampling="ts-inf")


@pytest.fixture(scope="module")
def maze() -> Any:
    return make("point-maze", episode_length=EPISODE, policy_hidden_sizes=[8])


@pytest.fixture(scope="module")
def seeded_archive(maze: Any) -> Archive:
    """A 5x5 archive holding a few random policies (evaluated for real)."""
    archive = Archive.grid(
        SPEC.template(), (5, 5), (-1.0, -1.0), (1.0, 1.0), qd_offset=maze.spec.qd_offset
    )
    population = maze.init_genomes(jax.random.key(0), 16, SPEC)
    evaluation = maze.evaluate(population, jax.random.key(1))
    archive, _ = archive.insert(population, evaluation.fitness, evaluation.descriptors)
    return archive


def _emitter(maze: Any, cls: type = ImaginationEmitter, **overrides: Any) -> ImaginationEmitter:
    settings: dict[str, Any] = dict(
        size=8,
        task=maze,
        dynamics_config=TINY_MODEL,
        imagined_batch_size=8,
        max_imagined_iterations=5,
        retrain_every=2,
        buffer_size=2000,
    )
    settings.update(overrides)
    return cls(**settings)


def test_proposals_improved_the_imagined_archive(maze: Any, seeded_archive: Archive) -> None:
    emitter = _emitter(maze, PerfectImagination, max_imagined_iterations=20)
    imagine = jax.jit(lambda key: emitter.imagine(key, None, seeded_archive))
    result = imagine(jax.random.key(2))
    assert not bool(result.fallback) and int(result.additions) >= emitter.size
    assert int(result.iterations) <= 20
    # Every proposal was added in imagination, and the imagined archive only grows: with a
    # perfect model each proposal, evaluated for real, also improves the real archive.
    assert bool(jnp.all(result.status > 0))
    real = maze.evaluate(result.genomes, jax.random.key(3))
    _, info = seeded_archive.insert(result.genomes, real.fitness, real.descriptors)
    np.testing.assert_array_equal(np.asarray(info.status) > 0, True)
    # The imagined archive holds them (at least as good), the real one is untouched.
    assert int(result.archive.occupied.sum()) >= int(seeded_archive.occupied.sum())
    assert float(result.archive.metrics()["qd_score"]) > float(seeded_archive.metrics()["qd_score"])


def test_few_additions_are_repeated_and_none_falls_back(maze: Any, seeded_archive: Archive) -> None:
    # One imagined iteration of 3 offspring cannot fill a batch of 8: repeated in order.
    emitter = _emitter(maze, PerfectImagination, imagined_batch_size=3, max_imagined_iterations=1)
    result = emitter.imagine(jax.random.key(4), None, seeded_archive)
    count = int(result.additions)
    assert int(result.iterations) == 1 and 0 < count <= 3
    first = jax.tree_util.tree_map(lambda x: x[:count], result.genomes)
    again = jax.tree_util.tree_map(lambda x: x[count : 2 * count], result.genomes)
    for a, b in zip(
        jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(again), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A full archive of unbeatable elites: nothing is added, the last offspring go out.
    full = Archive.grid(SPEC.template(), (1, 1), (-1.0, -1.0), (1.0, 1.0))
    full, _ = full.insert(
        jax.tree_util.tree_map(lambda x: x[:1], result.genomes),
        jnp.zeros((1,)),
        jnp.zeros((1, 2)),
    )
    result = emitter.imagine(jax.random.key(5), None, full)
    assert bool(result.fallback) and int(result.additions) == 0
    assert bool(jnp.all(result.status == 0))
    weights = np.asarray(jax.tree_util.tree_leaves(result.genomes)[0])
    assert weights.shape[0] == 8
    np.testing.assert_array_equal(weights[:3], weights[3:6])  # the 3 offspring, repeated


@pytest.mark.slow
def test_tell_fills_the_buffer_and_refits_every_k(maze: Any, seeded_archive: Archive) -> None:
    emitter = _emitter(maze)
    state = emitter.init(jax.random.key(6), seeded_archive)
    population = maze.init_genomes(jax.random.key(7), 8, SPEC)
    evaluation = maze.evaluate(population, jax.random.key(8), transitions=True)
    transitions = evaluation.transitions
    # The point maze's model state is its observation (the position).
    np.testing.assert_array_equal(transitions.model_states, transitions.observations)
    np.testing.assert_array_equal(transitions.next_model_states, transitions.next_observations)
    rows, valid = dynamics_rows(transitions)
    assert rows.states.shape == (8 * EPISODE, maze.model_state_size)
    _, info = seeded_archive.insert(population, evaluation.fitness, evaluation.descriptors)
    tell = jax.jit(
        lambda s, k: emitter.tell(k, s, seeded_archive, population, evaluation, info, None)
    )
    retrained, sizes = [], []
    for i in range(3):
        state, metrics = tell(state, jax.random.key(10 + i))
        retrained.append(int(metrics["retrained"]))
        sizes.append(int(metrics["buffer_size"]))
        assert np.isfinite(float(metrics["model_holdout_loss"]))
    assert retrained == [1, 0, 1]
    assert sizes == [int(valid.sum()) * (i + 1) for i in range(3)]
    genomes, state = jax.jit(lambda s, k: emitter.ask(k, s, seeded_archive, None))(
        state, jax.random.key(20)
    )
    assert jax.tree_util.tree_leaves(genomes)[0].shape[0] == 8
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(genomes))


def test_errors(maze: Any) -> None:
    with pytest.raises(ConfigError, match="model-state"):
        algorithms.get("da-qd-ext").build(
            make("lp-sphere"), 8, algorithms.get("da-qd-ext").hyperparameters()
        )
    hp = algorithms.get("gda-qd").hyperparameters({"p_model": 1.0})
    with pytest.raises(ConfigError, match="p_model"):
        algorithms.get("gda-qd").build(maze, 8, hp)
    with pytest.raises(ConfigError, match="positive integer"):
        _emitter(maze, retrain_every=0)


# ----------------------------------------------------------------------------- end to end
BATCH = 10
MODEL_HYPERPARAMETERS = {
    "model_members": 2,
    "model_hidden_sizes": [16, 16],
    "model_batch_size": 32,
    "model_steps": 20,
    "model_eval_every": 10,
    "model_buffer_size": 2000,
    "max_imagined_iterations": 3,
    "retrain_every": 2,
}


def _config(algorithm: str, extra: dict[str, Any] | None = None) -> TrainConfig:
    return TrainConfig(
        task="point-maze",
        algorithm=algorithm,
        evaluations=4 * BATCH,
        batch_size=BATCH,
        grid=(5, 5),
        task_kwargs={"episode_length": EPISODE},
        hyperparameters={**MODEL_HYPERPARAMETERS, **(extra or {})},
        policy={"hidden_sizes": [8]},
        seed=1,
        chunk=2,
    )


GDA_EXTRA = {
    "critic_hidden_sizes": [16, 16],
    "critic_steps": 4,
    "pg_steps": 2,
    "transition_batch": 32,
    "buffer_size": 1000,
}


EXTRA = {"da-qd-ext": None, "gda-qd": GDA_EXTRA}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``cli_run(algorithm)``: the directory of its tiny ``qdzoo train`` run (run once)."""
    runs: dict[str, Path] = {}

    def run(algorithm: str) -> Path:
        if algorithm not in runs:
            out = tmp_path_factory.mktemp(algorithm) / "run"
            args = train_cli_args(_config(algorithm, EXTRA[algorithm]))
            assert main([*args, "--out", str(out)]) == 0
            runs[algorithm] = out
        return runs[algorithm]

    return run


@pytest.mark.parametrize(("algorithm", "prefix"), [("da-qd-ext", ""), ("gda-qd", "model/")])
def test_runs_through_the_cli(algorithm: str, prefix: str, cli_run: Callable[[str], Path]) -> None:
    out = cli_run(algorithm)
    log = read_log(out)
    assert [row["iteration"] for row in log] == [1, 2, 3, 4]
    for row in log:
        for name in ("imagined_additions", "imagined_iterations", "model_holdout_loss"):
            assert np.isfinite(row[prefix + name]), name
        assert 0.0 <= row[prefix + "real_agreement"] <= 1.0
    assert [row[prefix + "retrained"] for row in log] == [1, 0, 1, 0]
    assert log[-1][prefix + "imagined_iterations"] >= 1
    if algorithm == "gda-qd":
        # The critic sees every offspring, the dynamics model only its own 9 of 10.
        assert log[0]["pg/buffer_size"] > log[0]["model/buffer_size"]
    config = json.loads((out / "config.json").read_text())
    assert config["algorithm"]["name"] == algorithm
    assert config["algorithm"]["hyperparameters"]["retrain_every"] == 2
    assert load_archive(out).archive.occupied.sum() > 1


@pytest.mark.slow
def test_resume_is_identical(cli_run: Callable[[str], Path], tmp_path: Path) -> None:
    # The model, its buffer and the retraining schedule are checkpointed with the loop.
    config = _config("da-qd-ext")
    assert_resume_is_identical(config, cli_run("da-qd-ext"), tmp_path / "run", stop_after=2 * BATCH)
