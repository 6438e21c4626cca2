"""The robust evaluation protocol, the corrected archive and ``qdzoo reevaluate``.

Everything runs on a small point-maze archive of random policies (episodes of 12 steps,
one hidden layer of 4), built in the test: no training loop and no Brax compile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from training.cli import main
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_spec, load_archive
from zoo.errors import ArtifactError, ConfigError, OutputExistsError, TaskMismatchError
from zoo.evaluation import evaluate_in_chunks, reevaluate, task_of
from zoo.robust import (
    DESCRIPTORS_STD,
    FITNESS_STD,
    RobustProtocol,
    agreement,
    evaluate_episodes,
    evaluate_robust,
    reevaluate_archive,
    save_artifact,
)
from zoo.tasks import make
from zoo.tasks.point_maze import STOCHASTIC_START

MAZE = {"episode_length": 12, "policy_hidden_sizes": [4]}
PROTOCOL = RobustProtocol(episodes=4, seed=3)


def _artifact(task: Any, size: int = 24, grid: tuple[int, int] = (4, 4)) -> ArchiveArtifact:
    """``size`` random genomes of ``task`` in a ``grid`` archive, with a trained-like config."""
    spec = task.spec
    genomes = task.init_genomes(jax.random.key(size), size)
    result = task.evaluate(genomes, jax.random.key(1))
    archive = Archive.grid(
        jax.tree_util.tree_map(lambda x: x[0], genomes),
        grid,
        spec.descriptor_low,
        spec.descriptor_high,
        qd_offset=spec.qd_offset,
    )
    archive, _ = archive.insert(genomes, result.fitness, result.descriptors)
    config: dict[str, Any] = {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": None if spec.genome != "policy" else task.default_policy().to_dict(),
        "archive": archive_spec(archive, spec.descriptor_names),
        "evaluation": {"reset": spec.reset, "episode_length": spec.episode_length, "seed": 0},
        "training": {"batch_size": 7},
    }
    return ArchiveArtifact(archive, config)


@pytest.fixture(scope="module")
def maze() -> ArchiveArtifact:
    """A deterministic-reset point-maze archive (what training makes)."""
    return _artifact(make("point-maze", **MAZE))


@pytest.fixture(scope="module")
def robust(maze: ArchiveArtifact) -> ArchiveArtifact:
    return reevaluate_archive(maze, PROTOCOL.episodes, PROTOCOL.seed)


@pytest.fixture(scope="module")
def stochastic_maze(robust: ArchiveArtifact) -> Any:
    """The robust archive's task (one object: every compiled evaluation is shared)."""
    task = task_of(robust)
    assert task.spec.reset == "stochastic"
    return task


@pytest.fixture(scope="module")
def saved(maze: ArchiveArtifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("robust") / "maze"
    maze.save_pretrained(path, plot=False)
    return path


# ------------------------------------------------------------------- the protocol


def test_results_do_not_depend_on_batch_size_or_chunking(stochastic_maze: Any) -> None:
    genomes = stochastic_maze.init_genomes(jax.random.key(0), 7)
    whole = evaluate_robust(stochastic_maze, genomes, PROTOCOL)
    assert whole.episode_fitness.shape == (7, 4) and whole.episode_descriptors.shape == (7, 4, 2)
    for batch in (1, 3):
        chunked = evaluate_robust(stochastic_maze, genomes, PROTOCOL, batch_size=batch)
        np.testing.assert_allclose(chunked.episode_fitness, whole.episode_fitness, atol=1e-5)
        np.testing.assert_allclose(
            chunked.episode_descriptors, whole.episode_descriptors, atol=1e-5
        )
    # a genome's episodes are the same in any population it is part of
    subset = jax.tree_util.tree_map(lambda x: x[2:5], genomes)
    alone = evaluate_robust(stochastic_maze, subset, PROTOCOL)
    np.testing.assert_allclose(alone.episode_fitness, whole.episode_fitness[2:5], atol=1e-5)
    # the episodes differ (stochastic resets), so the spread is measured
    assert np.all(whole.fitness_std > 0)
    np.testing.assert_allclose(whole.fitness, whole.episode_fitness.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(whole.descriptors_std, whole.episode_descriptors.std(axis=1))


def test_one_episode_is_a_plain_stochastic_evaluation(stochastic_maze: Any) -> None:
    genomes = stochastic_maze.init_genomes(jax.random.key(1), 7)
    one = evaluate_robust(stochastic_maze, genomes, RobustProtocol(1, seed=3))
    key = jax.random.fold_in(jax.random.key(3), 0)
    for i in range(7):
        single = jax.tree_util.tree_map(lambda x, i=i: x[i : i + 1], genomes)
        plain = stochastic_maze.evaluate(single, key)
        np.testing.assert_allclose(one.fitness[i], float(plain.fitness[0]), rtol=1e-5)
        np.testing.assert_allclose(one.descriptors[i], np.asarray(plain.descriptors[0]), atol=1e-5)
    assert np.all(one.fitness_std == 0)
    # the first episodes of a longer protocol are those of a shorter one
    longer = evaluate_robust(stochastic_maze, genomes, RobustProtocol(4, seed=3))
    np.testing.assert_allclose(longer.episode_fitness[:, :1], one.episode_fitness, atol=1e-5)


def test_every_genome_faces_the_same_start_states(stochastic_maze: Any) -> None:
    """Common random numbers: two copies of a genome at different rows score alike, and
    episode j starts inside the documented reset ranges."""
    genomes = stochastic_maze.init_genomes(jax.random.key(2), 7)
    twice = jax.tree_util.tree_map(lambda x: x[np.array([0, 1, 2, 3, 4, 5, 0])], genomes)
    f, d = evaluate_episodes(stochastic_maze, twice, jax.random.key(3), 4)
    np.testing.assert_array_equal(np.asarray(f[0]), np.asarray(f[6]))
    np.testing.assert_array_equal(np.asarray(d[0]), np.asarray(d[6]))
    noise = stochastic_maze.reset_noise()
    assert noise == {"kind": "uniform start", "x": [-0.1, 0.1], "y": [-1.0, -0.7]}
    start = stochastic_maze.reset(jax.random.fold_in(jax.random.key(3), 0), 1)
    (x_low, x_high), (y_low, y_high) = STOCHASTIC_START["x"], STOCHASTIC_START["y"]
    assert x_low <= float(start[0, 0]) <= x_high and y_low <= float(start[0, 1]) <= y_high


def test_protocol_and_tasks_are_checked(stochastic_maze: Any) -> None:
    for episodes in (0, -2, 1.5, True, "8"):
        with pytest.raises(ConfigError, match="episodes >= 1"):
            RobustProtocol(episodes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed must be an integer"):
        RobustProtocol(2, seed=0.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stochastic resets"):
        RobustProtocol(2, reset="deterministic")  # type: ignore[arg-type]
    deterministic = make("point-maze", **MAZE)
    genomes = deterministic.init_genomes(jax.random.key(0), 2)
    with pytest.raises(TaskMismatchError, match="reset='stochastic'"):
        evaluate_robust(deterministic, genomes, PROTOCOL)
    sphere = _artifact(make("lp-sphere", dimension=4), size=8)
    with pytest.raises(TaskMismatchError, match="vector genomes"):
        reevaluate_archive(sphere, 2)
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate_robust(stochastic_maze, genomes, PROTOCOL, batch_size=0)


def test_evaluate_in_chunks_reports_progress(stochastic_maze: Any) -> None:
    genomes = stochastic_maze.init_genomes(jax.random.key(0), 5)
    done: list[int] = []

    def population(_: int, rows: np.ndarray) -> Any:
        return jax.tree_util.tree_map(lambda x: x[rows], genomes)

    f, _ = evaluate_in_chunks(
        stochastic_maze,
        population,
        5,
        PROTOCOL.key(),
        batch_size=3,
        rollouts=4,
        evaluate=evaluate_episodes,
        progress=done.append,
    )
    assert done == [3, 5] and f.shape == (5, 4)


# -------------------------------------------------------------- the corrected archive


def test_reevaluated_archive_records_the_protocol(
    maze: ArchiveArtifact, robust: ArchiveArtifact, stochastic_maze: Any
) -> None:
    assert robust.config["archive"] == maze.config["archive"]
    assert robust.archive.num_cells == maze.archive.num_cells
    assert robust.archive.grid_shape == maze.archive.grid_shape
    before = int(maze.archive.occupied.sum())
    after = int(robust.archive.occupied.sum())
    assert 0 < after <= before
    evaluation = robust.config["evaluation"]
    assert evaluation["protocol"] == "robust" and evaluation["reset"] == "stochastic"
    assert (evaluation["episodes"], evaluation["seed"]) == (4, 3)
    assert evaluation["reset_noise"]["kind"] == "uniform start"
    assert robust.config["task"]["kwargs"]["reset"] == "stochastic"
    assert robust.task_spec.reset == "stochastic" and maze.task_spec.reset == "deterministic"
    info = robust.config["reevaluation"]
    assert info["metrics_before"]["qd_score"] == pytest.approx(maze.metrics()["qd_score"])
    assert info["elites_evaluated"] == before and 0 <= info["elites_in_same_cell"] <= before
    assert RobustProtocol.from_config(robust.config) == PROTOCOL
    # every stored elite holds its robust means; its std is stored as an extra
    fresh = evaluate_robust(stochastic_maze, robust.genomes(robust.cells), PROTOCOL)
    np.testing.assert_allclose(robust.fitness, fresh.fitness, rtol=1e-5)
    np.testing.assert_allclose(robust.descriptors, fresh.descriptors, atol=1e-5)
    stored_std = np.asarray(robust.archive.extras[FITNESS_STD])[robust.cells]
    np.testing.assert_allclose(stored_std, fresh.fitness_std, rtol=1e-4, atol=1e-6)
    assert np.asarray(robust.archive.extras[DESCRIPTORS_STD]).shape == (16, 2)
    # the corrected archive does not depend on the batch size
    other = reevaluate_archive(maze, PROTOCOL.episodes, PROTOCOL.seed, batch_size=3)
    np.testing.assert_allclose(
        np.asarray(other.archive.fitness), np.asarray(robust.archive.fitness), atol=1e-4
    )


def test_save_load_round_trip_and_eval_reproduces(robust: ArchiveArtifact, tmp_path: Path) -> None:
    path = save_artifact(robust, tmp_path / "robust")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask  # as a plain mkdir would make it
    loaded = load_archive(path)
    assert loaded.config["evaluation"] == robust.config["evaluation"]
    assert loaded.config["reevaluation"] == robust.config["reevaluation"]
    np.testing.assert_array_equal(loaded.cells, robust.cells)
    np.testing.assert_array_equal(loaded.fitness, robust.fitness)
    assert loaded.metrics() == pytest.approx(robust.metrics())
    assert set(loaded.archive.extras) == {FITNESS_STD, DESCRIPTORS_STD}
    card = (path / "README.md").read_text()
    assert "## Robust re-evaluation" in card and "| metric | before | after |" in card
    assert "| QD score |" in card and "mean over 4 episodes" in card
    # the recorded protocol reproduces the stored means, whatever the cells and batch size
    cells = loaded.top_indices(3)
    same = reevaluate(loaded, cells, batch_size=3)
    assert same.episode_fitness.shape == (3, 4)
    check = agreement(loaded, same, same_seed=True)
    assert check.within.all(), check.summary()
    assert check.fitness_error.max() < 1e-3
    # in chunks of the recorded batch size (the default): bit for bit
    exact = reevaluate(loaded, cells)
    np.testing.assert_array_equal(exact.fitness, loaded.archive.fitness[cells])
    np.testing.assert_array_equal(exact.descriptors, loaded.archive.descriptors[cells])
    assert agreement(loaded, exact, same_seed=True).exact.all()
    # fresh seeds give other numbers, compared in standard errors
    fresh = reevaluate(loaded, cells, batch_size=3, key=jax.random.key(11))
    other = agreement(loaded, fresh, same_seed=False)
    assert other.fitness_error.max() > 1e-3
    assert "standard errors" in other.summary()
    # an existing directory is not overwritten unless asked
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_artifact(robust, path)
    (path / "stale.txt").write_text("old")
    save_artifact(robust, path, overwrite=True)
    assert not (path / "stale.txt").exists()
    np.testing.assert_array_equal(load_archive(path).cells, robust.cells)


# ------------------------------------------------------------------------- the CLI


def test_cli_reevaluate_then_eval(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "robust"
    args = ["reevaluate", str(saved), "--episodes", "4", "--seed", "3", "--out", str(out)]
    assert main([*args, "--quiet", "--batch", "3"]) == 0
    printed = capsys.readouterr().out
    assert "metric" in printed and "before" in printed and "after" in printed
    assert "QD score" in printed and "coverage" in printed and f"wrote {out}" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["evaluation"]["protocol"] == "robust" and config["evaluation"]["episodes"] == 4
    assert main(["eval", str(out), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "robust protocol: mean of 4 episodes" in printed
    assert "agreement (same seed" in printed and ": 3 of 3 elites, 3 bit for bit" in printed
    assert main(["eval", str(out), "--top", "3", "--seed", "5"]) == 0
    assert "fresh seed: within 3 standard errors" in capsys.readouterr().out
    # non-robust archives: eval prints as before, --seed is refused
    assert main(["eval", str(saved), "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("re-evaluation (deterministic reset):") and "agreement" not in printed
    assert main(["eval", str(saved), "--seed", "1"]) == 2
    assert "--seed re-evaluates a robust archive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--episodes", "0"], "episodes >= 1"),
        (["--episodes", "2", "--batch", "0"], "--batch must be an integer >= 1"),
    ],
)
def test_cli_reevaluate_refuses_bad_options(
    saved: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main(["reevaluate", str(saved), *extra, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_reevaluate_refuses_missing_archive_and_existing_out(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing-here"
    code = main(["reevaluate", str(missing), "--episodes", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    assert main(["reevaluate", str(saved), "--episodes", "2", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["reevaluate", str(saved), "--episodes", "many", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "invalid int value" in capsys.readouterr().err


def test_loading_checks_the_recorded_protocol(robust: ArchiveArtifact, tmp_path: Path) -> None:
    path = save_artifact(robust, tmp_path / "robust")
    config = json.loads((path / "config.json").read_text())
    for evaluation, message in (
        ({k: v for k, v in config["evaluation"].items() if k != "episodes"}, "evaluation.episodes"),
        ({**config["evaluation"], "episodes": 0}, "evaluation.episodes"),
        ({**config["evaluation"], "protocol": "robustish"}, "evaluation.protocol"),
    ):
        (path / "config.json").write_text(json.dumps({**config, "evaluation": evaluation}))
        with pytest.raises(ArtifactError, match=message):
            load_archive(path)
