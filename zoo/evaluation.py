"""Re-evaluating elites with the protocol their artifact records.

An archive's ``config.json`` holds everything needed to evaluate any elite again: the task
and its constructor arguments (``config["task"]``) and the evaluation seed
(``config["evaluation"]["seed"]``; the key of a stochastic reset is
``jax.random.key(seed)``). :func:`reevaluate` applies that protocol to any cells::

    import zoo
    from zoo.evaluation import reevaluate

    artifact = zoo.load_archive("walker2d-uni-map-elites")
    result = reevaluate(artifact, artifact.top_indices(5))
    print(result.fitness - result.stored_fitness)

Populations are evaluated in chunks of a fixed batch (the last chunk padded by repeating its
first row), every chunk with the same key, so one compiled evaluation serves every chunk and
row ``i`` of a chunk always gets the reset of row ``i`` of ``Task.evaluate``'s batch: this is
the protocol the recipes store their numbers with (``docs/FORMAT.md``). Each policy may be
rolled out several times (``rollouts``): the chunk is tiled, so under a stochastic reset every
episode gets its own split of the key.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from zoo.errors import ConfigError
from zoo.tasks.base import Task
from zoo.tasks.protocol import population_size

if TYPE_CHECKING:
    from zoo.archive_artifact import ArchiveArtifact

__all__ = [
    "GENOME_DTYPES",
    "EpisodeStatistics",
    "Reevaluation",
    "cached_task",
    "evaluate_in_chunks",
    "evaluate_rollouts",
    "evaluation_seed",
    "reevaluate",
    "round_genomes",
    "task_of",
]

GENOME_DTYPES = ("float32", "float16")
"""Dtypes genomes can be stored in (and rounded to before a re-evaluation)."""

_TASKS: dict[str, Task] = {}


def cached_task(name: str, kwargs: dict[str, Any]) -> Task:
    """``zoo.tasks.make(name, **kwargs)``, one object per (name, kwargs) in a process, so
    compiled evaluations are shared between calls."""
    from zoo.tasks import make

    key = json.dumps([name, kwargs], sort_keys=True)
    if key not in _TASKS:
        _TASKS[key] = make(name, **kwargs)
    return _TASKS[key]


def task_of(artifact: Any) -> Task:
    """The artifact's task (``config["task"]``: an archive artifact or a generator), shared as
    :func:`cached_task`."""
    cfg = artifact.config["task"]
    return cached_task(cfg["name"], cfg["kwargs"])


def evaluation_seed(config: dict[str, Any]) -> int:
    """The seed of an artifact's re-evaluation protocol (``config["evaluation"]["seed"]``, 0
    when absent)."""
    return int(config.get("evaluation", {}).get("seed", 0))


def _check_genome_dtype(genome_dtype: str) -> None:
    if genome_dtype not in GENOME_DTYPES:
        raise ConfigError(
            f"genome_dtype must be one of {list(GENOME_DTYPES)}, got {genome_dtype!r}"
        )


def round_genomes(genomes: Any, genome_dtype: str) -> Any:
    """``genomes`` rounded to ``genome_dtype`` and cast back (what storing them does).

    Raises:
        ConfigError: a dtype other than ``float32`` or ``float16``.
    """
    _check_genome_dtype(genome_dtype)
    return jax.tree_util.tree_map(lambda x: x.astype(genome_dtype).astype(x.dtype), genomes)


@eqx.filter_jit
def evaluate_rollouts(
    task: Task, policies: Any, key: PRNGKeyArray, rollouts: int = 1
) -> tuple[Float[Array, "batch rollouts"], Float[Array, "batch rollouts k"]]:
    """Each of the ``B`` genomes rolled out ``rollouts`` times: ``[B, R]``, ``[B, R, k]``.

    The population is tiled ``R`` times (row ``r * B + b``) and evaluated with one key, so
    under a stochastic reset every episode gets its own split of ``key``; with ``R = 1`` this
    is ``task.evaluate(policies, key)``.
    """
    batch = population_size(policies)
    tiled = jax.tree_util.tree_map(lambda x: jnp.concatenate([x] * rollouts, axis=0), policies)
    result = task.evaluate(tiled, key)
    fitness = result.fitness.reshape(rollouts, batch).T
    descriptors = jnp.swapaxes(result.descriptors.reshape(rollouts, batch, -1), 0, 1)
    return fitness, descriptors


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, given {value!r}")
    return int(value)


def evaluate_in_chunks(
    task: Task,
    population: Callable[[int, np.ndarray], Any],
    size: int,
    key: PRNGKeyArray,
    *,
    batch_size: int,
    rollouts: int = 1,
    evaluate: Callable[..., tuple[Array, Array]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Float[np.ndarray, "n rollouts"], Float[np.ndarray, "n rollouts k"]]:
    """Evaluate ``size`` genomes in chunks of ``batch_size`` rows, every chunk with ``key``.

    Args:
        task: the task to roll out.
        population: ``population(chunk index, rows)`` returns the genomes of ``rows`` (row
            indices in ``[0, size)``, always ``batch_size`` of them: the last chunk is padded
            by repeating its first row) as a population of that many genomes.
        size: number of genomes.
        key: the evaluation key (the same for every chunk).
        batch_size: rows per compiled evaluation.
        rollouts: episodes per genome.
        evaluate: ``evaluate(task, policies, key, rollouts) -> ([B, R], [B, R, k])``, how a
            chunk is rolled out (default :func:`evaluate_rollouts`;
            :func:`zoo.robust.evaluate_episodes` for the robust protocol).
        progress: called with the number of genomes done after each chunk.

    Returns:
        Fitness ``[size, rollouts]`` and descriptors ``[size, rollouts, k]`` (numpy).

    Raises:
        ConfigError: ``batch_size`` or ``rollouts`` below 1.
    """
    batch_size = _positive_int("batch_size", batch_size)
    rollouts = _positive_int("rollouts", rollouts)
    evaluate = evaluate or evaluate_rollouts
    fitness, descriptors = [], []
    for i, start in enumerate(range(0, size, batch_size)):
        rows = np.arange(start, min(start + batch_size, size))
        padded = np.concatenate([rows, np.repeat(rows[:1], batch_size - rows.size)])
        f, d = evaluate(task, population(i, padded), key, rollouts)
        fitness.append(np.asarray(f)[: rows.size])
        descriptors.append(np.asarray(d)[: rows.size])
        if progress is not None:
            progress(int(rows[-1]) + 1)
    if not fitness:
        k = len(task.spec.descriptor_names)
        return np.zeros((0, rollouts), np.float32), np.zeros((0, rollouts, k), np.float32)
    return np.concatenate(fitness), np.concatenate(descriptors)


@dataclasses.dataclass(frozen=True)
class EpisodeStatistics:
    """Returns and descriptors of ``n`` genomes over several episodes each.

    Attributes:
        episode_fitness: ``[n, episodes]`` return of every episode.
        episode_descriptors: ``[n, episodes, k]`` descriptors of every episode.
    """

    episode_fitness: np.ndarray
    episode_descriptors: np.ndarray

    @property
    def fitness(self) -> np.ndarray:
        """``[n]`` mean return over the episodes (the return itself for one episode)."""
        return self.episode_fitness.mean(axis=1)

    @property
    def descriptors(self) -> np.ndarray:
        """``[n, k]`` mean descriptors over the episodes."""
        return self.episode_descriptors.mean(axis=1)

    @property
    def fitness_std(self) -> np.ndarray:
        """``[n]`` standard deviation of the returns (``ddof=0``; 0 for one episode)."""
        return self.episode_fitness.std(axis=1)

    @property
    def descriptors_std(self) -> np.ndarray:
        """``[n, k]`` standard deviation of the descriptors (``ddof=0``)."""
        return self.episode_descriptors.std(axis=1)


@dataclasses.dataclass(frozen=True)
class Reevaluation(EpisodeStatistics):
    """Elites evaluated again, next to what their archive stores.

    Attributes:
        episode_fitness: ``[n, rollouts]`` return of every episode.
        episode_descriptors: ``[n, rollouts, k]`` descriptors of every episode.
        cells: ``[n]`` the re-evaluated cells, in the order asked for.
        stored_fitness: ``[n]`` the fitness the archive stores for these cells.
        stored_descriptors: ``[n, k]`` the descriptors the archive stores.
    """

    cells: np.ndarray
    stored_fitness: np.ndarray
    stored_descriptors: np.ndarray


def reevaluate(
    artifact: ArchiveArtifact,
    cells: Any = None,
    *,
    batch_size: int | None = None,
    rollouts: int | None = None,
    key: PRNGKeyArray | None = None,
    genome_dtype: str = "float32",
) -> Reevaluation:
    """Evaluate the elites of ``cells`` again with the artifact's recorded protocol.

    An archive that records the robust protocol (``config["evaluation"]["protocol"] ==
    "robust"``, :mod:`zoo.robust`) is evaluated under it: ``episodes`` rollouts per elite,
    episode ``j`` of every elite from the reset of ``fold_in(key, j)``
    (:func:`zoo.robust.evaluate_episodes`), so the stored means are reproduced whatever the
    cells and the batch size.

    Args:
        artifact: an archive artifact (its config names the task and the evaluation seed).
        cells: cell indices (default: every occupied cell, ascending).
        batch_size: genomes per compiled evaluation (default: the training batch size
            ``config["training"]["batch_size"]``, or all cells at once when absent; for a
            robust archive the recorded ``config["reevaluation"]["batch_size"]``, so that its
            means are reproduced bit for bit on the same platform).
        rollouts: episodes per elite (more than 1 only tells something under a stochastic
            reset); default the recorded ``episodes`` of a robust archive, else 1.
        key: the evaluation key (default: ``jax.random.key(config["evaluation"]["seed"])``).
        genome_dtype: round the genomes to this dtype first (``"float16"``: evaluate them as
            a float16 artifact would store them).

    Returns:
        A :class:`Reevaluation` with per-episode and mean fitness and descriptors.

    Raises:
        ConfigError: a cell that is empty or outside the archive, a bad ``batch_size``,
            ``rollouts`` or ``genome_dtype``.
    """
    archive = artifact.archive
    cells = artifact.elite_indices() if cells is None else np.asarray(cells, np.int64).reshape(-1)
    occupied = np.asarray(archive.occupied)
    outside = (cells < 0) | (cells >= archive.num_cells)
    if np.any(outside) or not np.all(occupied[cells[~outside]]):
        bad = cells[outside | ~occupied[np.clip(cells, 0, archive.num_cells - 1)]]
        raise ConfigError(
            f"cells {bad[:10].tolist()} hold no elite (the archive has {archive.num_cells} "
            f"cells, {int(occupied.sum())} occupied); pass occupied cells (artifact.cells)"
        )
    _check_genome_dtype(genome_dtype)
    if key is None:
        key = jax.random.key(evaluation_seed(artifact.config))
    evaluation = artifact.config.get("evaluation") or {}
    evaluate = None
    if evaluation.get("protocol") == "robust":
        from zoo.robust import evaluate_episodes

        evaluate = evaluate_episodes
        rollouts = int(evaluation["episodes"]) if rollouts is None else rollouts
        if batch_size is None:
            batch_size = (artifact.config.get("reevaluation") or {}).get("batch_size")
    if batch_size is None:
        batch_size = int(artifact.config.get("training", {}).get("batch_size", 0)) or max(
            cells.size, 1
        )
    task = task_of(artifact)
    rollouts = 1 if rollouts is None else rollouts

    def population(_: int, rows: np.ndarray) -> Any:
        return round_genomes(artifact.genomes(cells[rows]), genome_dtype)

    fitness, descriptors = evaluate_in_chunks(
        task,
        population,
        cells.size,
        key,
        batch_size=batch_size,
        rollouts=rollouts,
        evaluate=evaluate,
    )
    return Reevaluation(
        cells=cells,
        episode_fitness=fitness,
        episode_descriptors=descriptors,
        stored_fitness=np.asarray(archive.fitness)[cells],
        stored_descriptors=np.asarray(archive.descriptors)[cells],
    )
