"""The artifact base, the archive's read accessors, and the one re-evaluation of elites.

Everything runs on small pure-function (lp-sphere) and point-maze archives built in the test,
so no training loop and no Brax compile is needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_spec, load_archive
from zoo.artifact import Artifact
from zoo.errors import (
    ArtifactError,
    ChecksumError,
    ConfigError,
    InvalidRepoIdError,
    MissingDependencyError,
    QDZooError,
    UnknownModelError,
    UnknownNameError,
)
from zoo.evaluation import Reevaluation, evaluate_in_chunks, reevaluate, round_genomes
from zoo.generator import Generator
from zoo.rollouts import render_html
from zoo.tasks import make


def _artifact(task: Any, archive: Archive, batch_size: int | None = None) -> ArchiveArtifact:
    spec = task.spec
    config: dict[str, Any] = {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": None if spec.genome != "policy" else task.default_policy().to_dict(),
        "archive": archive_spec(archive, spec.descriptor_names),
        "evaluation": {"reset": spec.reset, "episode_length": spec.episode_length, "seed": 0},
    }
    if batch_size is not None:
        config["training"] = {"batch_size": batch_size}
    return ArchiveArtifact(archive, config)


def _grid_artifact(
    task: Any, size: int, grid: tuple[int, int], extras: dict[str, Any] | None = None
) -> ArchiveArtifact:
    """``size`` random genomes of ``task`` inserted into a ``grid`` archive (with ``extras``,
    ``{name: fn(evaluation) -> [size, ...]}``)."""
    genomes = task.init_genomes(jax.random.key(size), size)
    result = task.evaluate(genomes, jax.random.key(1))
    values = {name: fn(result) for name, fn in (extras or {}).items()}
    archive = Archive.grid(
        jax.tree_util.tree_map(lambda x: x[0], genomes),
        grid,
        task.spec.descriptor_low,
        task.spec.descriptor_high,
        qd_offset=task.spec.qd_offset,
        extras_template={name: v[0] for name, v in values.items()} or None,
    )
    archive, _ = archive.insert(genomes, result.fitness, result.descriptors, values or None)
    return _artifact(task, archive, batch_size=16)


@pytest.fixture(scope="module")
def sphere() -> ArchiveArtifact:
    """A 5x5 lp-sphere archive (vector genomes of size 4) with two per-elite extras."""
    extras = {
        "pair": lambda r: 2.0 * r.descriptors,
        "step": lambda r: jnp.arange(r.fitness.shape[0], dtype=jnp.float32),
    }
    return _grid_artifact(make("lp-sphere", dimension=4), 64, (5, 5), extras)


@pytest.fixture(scope="module")
def maze() -> ArchiveArtifact:
    """A point-maze archive of random MLP policies (stochastic resets)."""
    task = make("point-maze", episode_length=20, policy_hidden_sizes=(4,), reset="stochastic")
    return _grid_artifact(task, 32, (4, 4))


# -------------------------------------------------------------------- read accessors


def test_accessors_read_the_occupied_cells_in_ascending_order(sphere: ArchiveArtifact) -> None:
    occupied = np.flatnonzero(np.asarray(sphere.archive.occupied))
    np.testing.assert_array_equal(sphere.cells, occupied)
    assert sphere.cells.dtype == np.int64 and np.all(np.diff(sphere.cells) > 0)
    np.testing.assert_array_equal(sphere.fitness, np.asarray(sphere.archive.fitness)[occupied])
    assert sphere.descriptors.shape == (occupied.size, 2)
    np.testing.assert_array_equal(
        sphere.descriptors, np.asarray(sphere.archive.descriptors)[occupied]
    )


def test_data_dict_holds_every_column(sphere: ArchiveArtifact) -> None:
    data = sphere.data()
    n = sphere.cells.size
    assert set(data) == {"cell", "fitness", "descriptors", "threshold", "solution", "pair", "step"}
    assert data["descriptors"].shape == (n, 2) and data["solution"].shape == (n, 4)
    assert data["pair"].shape == (n, 2) and data["step"].shape == (n,)
    np.testing.assert_array_equal(data["cell"], sphere.cells)
    np.testing.assert_array_equal(data["fitness"], sphere.fitness)
    np.testing.assert_array_equal(
        data["threshold"], np.asarray(sphere.archive.thresholds)[data["cell"]]
    )
    np.testing.assert_array_equal(data["pair"], 2.0 * data["descriptors"])
    np.testing.assert_array_equal(data["solution"], np.asarray(sphere.genomes(sphere.cells)))
    with pytest.raises(ConfigError, match="'dict' for numpy arrays"):
        sphere.data("polars")  # type: ignore[arg-type]


def test_data_solution_is_the_flattened_policy(maze: ArchiveArtifact) -> None:
    data = maze.data("dict")
    cell = int(maze.cells[1])
    flat, _ = ravel_pytree(jax.tree_util.tree_map(lambda x: x[cell], maze.archive.genomes))
    np.testing.assert_array_equal(data["solution"][1], np.asarray(flat))
    assert data["solution"].shape == (maze.cells.size, flat.size)


def test_data_pandas_frame(sphere: ArchiveArtifact) -> None:
    pandas = pytest.importorskip("pandas")
    frame = sphere.data("pandas")
    names = list(sphere.task_spec.descriptor_names)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == [
        "cell", "fitness", *names, "threshold",
        "solution_0", "solution_1", "solution_2", "solution_3", "pair_0", "pair_1", "step",
    ]  # fmt: skip
    assert len(frame) == sphere.cells.size
    np.testing.assert_array_equal(frame["cell"].to_numpy(), sphere.cells)
    np.testing.assert_array_equal(frame[names].to_numpy(), sphere.descriptors)


def test_data_pandas_without_pandas_says_how_to_install(
    sphere: ArchiveArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install pandas") as caught:
        sphere.data("pandas")
    assert isinstance(caught.value, ImportError)


# --------------------------------------------------------------------- artifact base


def test_both_artifacts_share_the_base() -> None:
    assert issubclass(ArchiveArtifact, Artifact) and issubclass(Generator, Artifact)
    assert (ArchiveArtifact.kind, Generator.kind) == ("archive", "generator")
    for method in ("from_pretrained", "from_directory", "push_saved", "make_task"):
        assert getattr(ArchiveArtifact, method).__qualname__.startswith("Artifact.")
        assert getattr(Generator, method).__qualname__.startswith("Artifact.")


def test_save_load_round_trip_and_checks(sphere: ArchiveArtifact, tmp_path: Path) -> None:
    path = sphere.save_pretrained(tmp_path / "a", plot=False)
    assert sphere.path == path
    config = json.loads((path / "config.json").read_text())
    assert config["artifact"] == "archive" and "library_versions" in config
    assert set(config["files"]) == {"archive.safetensors"}
    assert not list(path.glob(".tmp-*"))  # the staging directory is gone
    loaded = load_archive(path)
    assert loaded.path == path
    np.testing.assert_array_equal(loaded.cells, sphere.cells)
    np.testing.assert_array_equal(loaded.data()["pair"], sphere.data()["pair"])
    # a generator loader names the archive loader, and the archive loader the generator one
    with pytest.raises(ArtifactError, match="zoo.load_archive"):
        Generator.from_directory(path)
    config["artifact"] = "generator"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="zoo.load_generator"):
        load_archive(other)
    # a recorded weight file that is missing or changed
    weights = path / "archive.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_archive(path)
    weights.write_bytes(data[:-4] + b"\0\0\0\0")
    with pytest.raises(ChecksumError, match="sha256"):
        load_archive(path)


def test_push_checks_the_repo_id_before_writing(sphere: ArchiveArtifact, tmp_path: Path) -> None:
    with pytest.raises(InvalidRepoIdError, match="namespace"):
        sphere.push_to_hub("no-namespace")
    with pytest.raises(InvalidRepoIdError):
        ArchiveArtifact.push_saved(tmp_path, "a/b/c")
    with pytest.raises(ConfigError, match="genome_dtype"):
        sphere.save_pretrained(tmp_path / "bad", genome_dtype="int8")
    assert not (tmp_path / "bad").exists()


def test_errors_live_in_zoo_errors() -> None:
    import zoo.catalog
    import zoo.hub

    assert issubclass(UnknownModelError, UnknownNameError)
    assert issubclass(InvalidRepoIdError, QDZooError)
    assert "InvalidRepoIdError" not in zoo.hub.__all__
    assert "UnknownModelError" not in zoo.catalog.__all__


# ---------------------------------------------------------------------- re-evaluation


def test_reevaluate_reproduces_a_pure_function_archive(sphere: ArchiveArtifact) -> None:
    result = reevaluate(sphere)
    assert isinstance(result, Reevaluation)
    np.testing.assert_array_equal(result.cells, sphere.cells)
    assert result.episode_fitness.shape == (sphere.cells.size, 1)
    np.testing.assert_allclose(result.fitness, sphere.fitness, rtol=1e-6)
    np.testing.assert_allclose(result.descriptors, sphere.descriptors, rtol=1e-6)
    np.testing.assert_array_equal(result.stored_fitness, sphere.fitness)
    # chunking (the last chunk padded) changes nothing for a deterministic task
    cells = sphere.top_indices(5)
    small = reevaluate(sphere, cells, batch_size=2)
    whole = reevaluate(sphere, cells, batch_size=5)
    np.testing.assert_allclose(small.fitness, whole.fitness, rtol=1e-6)
    np.testing.assert_array_equal(small.cells, cells)


def test_reevaluate_rounds_genomes_and_checks_its_inputs(sphere: ArchiveArtifact) -> None:
    cells = sphere.cells[:3]
    half = reevaluate(sphere, cells, genome_dtype="float16")
    rounded = round_genomes(sphere.genomes(cells), "float16")
    expected = sphere.make_task().evaluate(rounded, jax.random.key(0))
    np.testing.assert_allclose(half.fitness, np.asarray(expected.fitness), rtol=1e-6)
    empty = int(np.flatnonzero(~np.asarray(sphere.archive.occupied))[0])
    with pytest.raises(ConfigError, match="hold no elite"):
        reevaluate(sphere, [empty])
    with pytest.raises(ConfigError, match="hold no elite"):
        reevaluate(sphere, [10_000])
    with pytest.raises(ConfigError, match="genome_dtype"):
        reevaluate(sphere, cells, genome_dtype="bfloat16")
    with pytest.raises(ConfigError, match="rollouts"):
        reevaluate(sphere, cells, rollouts=0)


def test_reevaluate_with_rollouts_under_stochastic_resets(maze: ArchiveArtifact) -> None:
    assert maze.task_spec.reset == "stochastic"
    result = reevaluate(maze, rollouts=3, batch_size=8)
    n = maze.cells.size
    assert result.episode_fitness.shape == (n, 3)
    assert result.episode_descriptors.shape == (n, 3, 2)
    np.testing.assert_allclose(result.fitness, result.episode_fitness.mean(axis=1))
    # the recorded seed is the default key; the same protocol gives the same numbers
    again = reevaluate(maze, rollouts=3, batch_size=8, key=jax.random.key(0))
    np.testing.assert_array_equal(again.episode_fitness, result.episode_fitness)
    # one rollout in one batch is task.evaluate with jax.random.key(seed)
    single = reevaluate(maze, batch_size=n)
    plain = maze.make_task().evaluate(maze.genomes(maze.cells), jax.random.key(0))
    np.testing.assert_allclose(single.fitness, np.asarray(plain.fitness), rtol=1e-5)


def test_evaluate_in_chunks_pads_and_trims(sphere: ArchiveArtifact) -> None:
    task = sphere.make_task()
    seen: list[int] = []

    def population(i: int, rows: np.ndarray) -> Any:
        seen.append(rows.size)
        return sphere.genomes(sphere.cells[rows])

    f, d = evaluate_in_chunks(task, population, 5, jax.random.key(0), batch_size=4)
    assert seen == [4, 4] and f.shape == (5, 1) and d.shape == (5, 1, 2)
    np.testing.assert_allclose(f[:, 0], sphere.fitness[:5], rtol=1e-6)
    f, d = evaluate_in_chunks(task, population, 0, jax.random.key(0), batch_size=4)
    assert f.shape == (0, 1) and d.shape == (0, 1, 2)


def test_render_refuses_a_task_without_a_scene(maze: ArchiveArtifact, tmp_path: Path) -> None:
    policy = jax.tree_util.tree_map(lambda x: x[0], maze.genomes(maze.cells[:1]))
    with pytest.raises(ConfigError, match="Brax task"):
        render_html(maze.make_task(), policy, jax.random.key(0), tmp_path / "x.html")
