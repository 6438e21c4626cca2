"""Importers: pyribs Grid/CVT archives and QDax repertoires become qdzoo archive artifacts.

One tiny point maze (10 steps, 2 -> 4 -> 2 tanh policies) and one population of random
policies evaluated once by qdzoo are shared by every test: the real ``ribs`` archives and the
QDax-like repertoire are filled with those values, so a re-evaluation of the imported elites
must give them back.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from models.policy import MLPPolicy, PolicySpec, flatten_population
from zoo import tasks
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact
from zoo.errors import ConfigError, NonFiniteError, ShapeError, TaskMismatchError
from zoo.evaluation import reevaluate

ribs_archives = pytest.importorskip("ribs.archives")

TASK_KWARGS = {"episode_length": 10, "policy_hidden_sizes": [4]}
POPULATION = 32
GRID = (5, 5)
RANGES = [(-1.0, 1.0), (-1.0, 1.0)]


@dataclasses.dataclass
class Evaluated:
    task: Any
    policies: MLPPolicy
    flat: np.ndarray
    fitness: np.ndarray
    descriptors: np.ndarray


@pytest.fixture(scope="module")
def evaluated() -> Evaluated:
    task = tasks.make("point-maze", **TASK_KWARGS)
    spec = task.default_policy()
    # Scaled-up weights spread the final positions over the maze.
    policies = jax.tree_util.tree_map(
        lambda x: 3 * x, spec.init_population(jax.random.key(1), POPULATION)
    )
    result = task.evaluate(policies, jax.random.key(0))
    flat, _ = flatten_population(policies)
    return Evaluated(
        task,
        policies,
        np.asarray(flat, np.float64),
        np.asarray(result.fitness, np.float64),
        np.asarray(result.descriptors, np.float64),
    )


@functools.cache
def _centroids() -> np.ndarray:
    return np.asarray(zoo.archive.cvt_centroids(jax.random.key(2), 12, (-1, -1), (1, 1), 2000))


def _ribs_archive(kind: str, solution_dim: int, **kwargs: Any) -> Any:
    common = dict(solution_dim=solution_dim, ranges=kwargs.pop("ranges", RANGES), **kwargs)
    if kind == "grid":
        return ribs_archives.GridArchive(dims=GRID, **common)
    return ribs_archives.CVTArchive(centroids=_centroids(), **common)


def _filled_ribs(kind: str, e: Evaluated) -> Any:
    archive = _ribs_archive(kind, e.flat.shape[1])
    archive.add(e.flat, e.fitness, e.descriptors)
    return archive


def _reference_archive(kind: str, e: Evaluated) -> Archive:
    """qdzoo's own insertion of the same population into the same tessellation."""
    template = e.task.default_policy().template()
    if kind == "grid":
        empty = Archive.grid(template, GRID, (-1, -1), (1, 1))
    else:
        empty = Archive.cvt(template, _centroids(), (-1, -1), (1, 1))
    archive, _ = empty.insert(e.policies, e.fitness, e.descriptors)
    return archive


def _check_same_elites(artifact: ArchiveArtifact, reference: Archive) -> None:
    np.testing.assert_array_equal(artifact.cells, reference.elite_indices())
    np.testing.assert_allclose(artifact.fitness, np.asarray(reference.fitness)[artifact.cells])
    np.testing.assert_allclose(
        artifact.descriptors, np.asarray(reference.descriptors)[artifact.cells]
    )
    ours = jax.tree_util.tree_leaves(artifact.genomes(artifact.cells))
    theirs = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda x: x[artifact.cells], reference.genomes)
    )
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _check_round_trip(artifact: ArchiveArtifact, path: Path) -> ArchiveArtifact:
    artifact.save_pretrained(path, plot=False)
    loaded = zoo.load_archive(path)
    np.testing.assert_array_equal(loaded.cells, artifact.cells)
    np.testing.assert_array_equal(loaded.fitness, artifact.fitness)
    np.testing.assert_array_equal(loaded.descriptors, artifact.descriptors)
    np.testing.assert_array_equal(loaded.data()["solution"], artifact.data()["solution"])
    assert loaded.config["source"] == artifact.config["source"]
    assert loaded.archive.tessellation == artifact.archive.tessellation
    np.testing.assert_array_equal(loaded.archive.centroids, artifact.archive.centroids)
    # The stored values came from qdzoo's evaluation, so qdzoo's re-evaluation gives them back.
    again = reevaluate(loaded, batch_size=8)  # one compiled evaluation for every test
    np.testing.assert_allclose(again.fitness, loaded.fitness, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(again.descriptors, loaded.descriptors, atol=1e-5)
    return loaded


# ----------------------------------------------------------------------------- pyribs
@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_pyribs_round_trip(kind: str, evaluated: Evaluated, tmp_path: Path) -> None:
    source = _filled_ribs(kind, evaluated)
    data = source.data()
    artifact = zoo.from_pyribs(source, task=evaluated.task, name="maze-test")
    assert artifact.archive.tessellation == kind
    assert len(artifact.cells) == len(source) > 3
    # Every elite in the cell pyribs put it in, with pyribs' values and solution.
    order = np.argsort(data["index"])
    np.testing.assert_array_equal(artifact.cells, data["index"][order])
    np.testing.assert_allclose(artifact.fitness, data["objective"][order], rtol=1e-6)
    np.testing.assert_allclose(artifact.descriptors, data["measures"][order], rtol=1e-6)
    np.testing.assert_allclose(
        artifact.data()["solution"], data["solution"][order].astype(np.float32)
    )
    # ... which are the elites qdzoo's own insertion keeps.
    _check_same_elites(artifact, _reference_archive(kind, evaluated))
    src = artifact.config["source"]
    assert src["library"] == "ribs" and src["version"] == "0.12.0"
    assert src["archive"] == ("GridArchive" if kind == "grid" else "CVTArchive")
    assert src["name"] == "maze-test" and "re-evaluation" in src["note"]
    assert artifact.config["algorithm"]["name"] == "imported-ribs"
    assert artifact.config["task"]["kwargs"] == evaluated.task.spec.kwargs
    _check_round_trip(artifact, tmp_path / kind)


def test_pyribs_task_by_name_rebuilds_the_policy_task(evaluated: Evaluated) -> None:
    """A task name with a policy of other hidden sizes records the task that builds it."""
    artifact = zoo.from_pyribs(
        _filled_ribs("grid", evaluated),
        task="point-maze",
        policy=evaluated.task.default_policy(),
    )
    assert artifact.config["task"]["kwargs"]["policy_hidden_sizes"] == [4]
    assert artifact.make_task().default_policy() == artifact.policy_spec


def test_pyribs_cma_mae_thresholds_are_kept(evaluated: Evaluated) -> None:
    source = _ribs_archive("grid", evaluated.flat.shape[1], learning_rate=0.1, threshold_min=-50)
    source.add(evaluated.flat, evaluated.fitness, evaluated.descriptors)
    artifact = zoo.from_pyribs(source, task=evaluated.task)
    data = source.data()
    order = np.argsort(data["index"])
    assert artifact.archive.learning_rate == pytest.approx(0.1)
    assert artifact.archive.threshold_min == -50
    np.testing.assert_allclose(artifact.data()["threshold"], data["threshold"][order], rtol=1e-6)
    assert not np.allclose(artifact.data()["threshold"], artifact.fitness)


@pytest.fixture(scope="module")
def arm() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """A 5-joint arm (vector genomes): the task, genomes, fitness and descriptors."""
    task = tasks.make("arm", num_joints=5)
    genomes = jax.random.uniform(jax.random.key(3), (16, 5), minval=-np.pi, maxval=np.pi)
    result = task.evaluate(genomes, jax.random.key(0))
    return task, np.asarray(genomes), np.asarray(result.fitness), np.asarray(result.descriptors)


def test_pyribs_vector_task(arm: tuple[Any, ...], tmp_path: Path) -> None:
    task, genomes, fitness, descriptors = arm
    source = ribs_archives.GridArchive(solution_dim=5, dims=(4, 4), ranges=[(-5.0, 5.0)] * 2)
    source.add(genomes, fitness, descriptors)
    artifact = zoo.from_pyribs(source, task=task)
    assert artifact.config["policy"] is None
    _check_round_trip(artifact, tmp_path / "arm")


def test_pyribs_errors(evaluated: Evaluated) -> None:
    size = evaluated.flat.shape[1]
    longer = _ribs_archive("grid", size + 1)
    longer.add(np.zeros((1, size + 1)), [0.0], [[0.0, 0.0]])
    with pytest.raises(ShapeError, match=rf"must hold {size} numbers.*length {size + 1}"):
        zoo.from_pyribs(longer, task=evaluated.task)
    three = ribs_archives.GridArchive(solution_dim=size, dims=(2, 2, 2), ranges=[(-1, 1)] * 3)
    with pytest.raises(TaskMismatchError, match="3 dimension.*2 descriptors"):
        zoo.from_pyribs(three, task=evaluated.task)
    other_bounds = _ribs_archive("grid", size, ranges=[(0.0, 1.0), (-1.0, 1.0)])
    with pytest.raises(TaskMismatchError, match=r"low=\[0.0, -1.0\].*descriptor bounds"):
        zoo.from_pyribs(other_bounds, task=evaluated.task)
    with pytest.raises(TaskMismatchError, match="maps 3 observations"):
        zoo.from_pyribs(
            _ribs_archive("grid", size), task=evaluated.task, policy=PolicySpec(3, 2, (4,))
        )
    epsilon = ribs_archives.GridArchive(solution_dim=size, dims=GRID, ranges=RANGES, epsilon=0.1)
    with pytest.raises(ConfigError, match="epsilon"):
        zoo.from_pyribs(epsilon, task=evaluated.task)
    with pytest.raises(ConfigError, match="GridArchive or CVTArchive, given dict"):
        zoo.from_pyribs({}, task=evaluated.task)


# ------------------------------------------------------------------------------- QDax
@dataclasses.dataclass
class Repertoire:
    """The fields of QDax's ``MapElitesRepertoire`` that the importer reads."""

    genotypes: Any
    fitnesses: Any
    descriptors: Any
    centroids: Any


def _flax_params(policies: MLPPolicy) -> dict[str, Any]:
    """A population of our policies in flax ``MLP`` layout (``kernel [cells, in, out]``)."""
    return {
        "params": {
            f"Dense_{i}": {"kernel": jnp.swapaxes(w, -1, -2), "bias": b}
            for i, (w, b) in enumerate(zip(policies.weights, policies.biases, strict=True))
        }
    }


def _flax_forward(params: dict[str, Any], observation: np.ndarray) -> np.ndarray:
    """QDax's ``MLP(activation=tanh, final_activation=tanh)`` for one (unbatched) genotype."""
    h = observation
    for i in range(len(params["params"])):
        layer = params["params"][f"Dense_{i}"]
        h = np.tanh(h @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]))
    return h


@pytest.fixture(scope="module")
def repertoire(evaluated: Evaluated) -> tuple[Repertoire, Archive]:
    reference = _reference_archive("cvt", evaluated)
    fitness = np.where(np.asarray(reference.occupied), np.asarray(reference.fitness), -np.inf)
    return (
        Repertoire(
            genotypes=_flax_params(reference.genomes),
            fitnesses=fitness[:, None],  # QDax 0.5 keeps [cells, 1]
            descriptors=np.asarray(reference.descriptors),
            centroids=np.asarray(reference.centroids),
        ),
        reference,
    )


def test_qdax_round_trip(
    repertoire: tuple[Repertoire, Archive], evaluated: Evaluated, tmp_path: Path
) -> None:
    source, reference = repertoire
    artifact = zoo.from_qdax(source, task=evaluated.task, version="0.5.0")
    assert artifact.archive.tessellation == "cvt"
    np.testing.assert_array_equal(artifact.archive.centroids, source.centroids)
    _check_same_elites(artifact, reference)
    assert artifact.policy_spec == evaluated.task.default_policy()
    src = artifact.config["source"]
    assert (src["library"], src["version"], src["archive"]) == ("qdax", "0.5.0", "Repertoire")
    assert src["num_elites"] == len(artifact.cells)
    # The converted policy computes what the flax MLP computes.
    cell = int(artifact.cells[0])
    one = jax.tree_util.tree_map(lambda x: x[cell], source.genotypes)
    policy = jax.tree_util.tree_map(lambda x: x[cell], artifact.archive.genomes)
    observation = np.asarray([0.3, -0.7], np.float32)
    np.testing.assert_allclose(
        np.asarray(policy(jnp.asarray(observation))), _flax_forward(one, observation), rtol=1e-5
    )
    _check_round_trip(artifact, tmp_path / "qdax")
    # [cells] fitnesses and a policy spec given explicitly import the same archive.
    flat = dataclasses.replace(source, fitnesses=source.fitnesses[:, 0])
    again = zoo.from_qdax(flat, task=evaluated.task, policy=evaluated.task.default_policy())
    _check_same_elites(again, reference)


def test_qdax_errors(repertoire: tuple[Repertoire, Archive], evaluated: Evaluated) -> None:
    source, _ = repertoire
    task = evaluated.task
    three = dataclasses.replace(
        source,
        centroids=np.zeros((source.centroids.shape[0], 3)),
        descriptors=np.zeros((source.centroids.shape[0], 3)),
    )
    with pytest.raises(TaskMismatchError, match="3 dimension.*2 descriptors"):
        zoo.from_qdax(three, task=task)
    with pytest.raises(TaskMismatchError, match=r"kernels have \(2, 4, 2\)"):
        zoo.from_qdax(source, task=task, policy=PolicySpec(2, 2, (8,)))
    with pytest.raises(TaskMismatchError, match="outside the descriptor bounds"):
        zoo.from_qdax(dataclasses.replace(source, centroids=source.centroids + 5), task=task)
    with pytest.raises(ConfigError, match="flax MLP parameters"):
        zoo.from_qdax(dataclasses.replace(source, genotypes={"w": np.zeros(3)}), task=task)
    with pytest.raises(ShapeError, match=r"\[cells\] or \[cells, 1\]"):
        zoo.from_qdax(dataclasses.replace(source, fitnesses=np.zeros(3)), task=task)
    with pytest.raises(ConfigError, match="has no 'genotypes'"):
        zoo.from_qdax(object(), task=task)
    # An elite whose descriptors are nearer another centroid than its own cell's.
    occupied = np.flatnonzero(np.isfinite(source.fitnesses[:, 0]))
    moved = np.asarray(source.descriptors).copy()
    moved[occupied[0]] = source.centroids[occupied[1]]
    with pytest.raises(ConfigError, match="1 of the .* fall into another cell"):
        zoo.from_qdax(dataclasses.replace(source, descriptors=moved), task=task)
    nan = np.asarray(source.descriptors).copy()
    nan[occupied[0], 0] = np.nan
    with pytest.raises(NonFiniteError, match="NaN or infinite descriptors for 1 elite"):
        zoo.from_qdax(dataclasses.replace(source, descriptors=nan), task=task)


def test_qdax_vector_task(arm: tuple[Any, ...]) -> None:
    """Genotypes of a vector task are one ``[cells, genome_size]`` array."""
    task, genomes, fitness, descriptors = arm
    centroids = zoo.archive.cvt_centroids(jax.random.key(4), 6, (-5, -5), (5, 5), 600)
    reference, _ = Archive.cvt(np.zeros(5, np.float32), centroids, (-5, -5), (5, 5)).insert(
        genomes, fitness, descriptors
    )
    source = Repertoire(
        genotypes=reference.genomes,
        fitnesses=jnp.where(reference.occupied, reference.fitness, -jnp.inf),
        descriptors=reference.descriptors,
        centroids=reference.centroids,
    )
    artifact = zoo.from_qdax(source, task=task)
    assert artifact.config["policy"] is None
    _check_same_elites(artifact, reference)
