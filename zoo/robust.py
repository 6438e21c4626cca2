"""Robust evaluation: every genome's mean fitness and descriptors over ``K`` noisy episodes.

An archive made under a deterministic reset rates each elite on one episode from one fixed
start; a small change of start state can move it to another cell or cost it most of its
fitness. The robust protocol rolls every genome out ``K`` times from stochastic resets and
reports the mean fitness and mean descriptors (and their standard deviations).
:func:`reevaluate_archive` re-evaluates every elite of an archive under it and re-inserts
them into a fresh archive of the same tessellation (the *corrected* archive of the
uncertain-QD literature)::

    import zoo
    from zoo.robust import RobustProtocol, evaluate_robust, reevaluate_archive

    artifact = zoo.load_archive("walker2d-uni-map-elites")
    robust = reevaluate_archive(artifact, episodes=8, seed=0)
    robust.config["reevaluation"]["metrics_before"], robust.metrics()

Episode ``j`` of *every* genome starts from the reset drawn with
``jax.random.fold_in(jax.random.key(seed), j)`` (common random numbers): all genomes face the
same ``K`` start states, the result of a genome does not depend on the batch it is evaluated
in or on how a population is chunked (up to float32 rounding: the same batch size reproduces
it bit for bit), and the first ``K`` episodes of a longer protocol are those of a shorter
one. ``docs/FORMAT.md`` ("Robust evaluation") states the protocol and the
tolerance within which ``qdzoo eval`` reproduces stored values.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from zoo.archive_artifact import ArchiveArtifact, empty_archive
from zoo.artifact import finite_or_none
from zoo.errors import ArtifactError, ConfigError, OutputExistsError, TaskMismatchError
from zoo.evaluation import (
    EpisodeStatistics,
    Reevaluation,
    cached_task,
    evaluate_in_chunks,
)
from zoo.serialization import atomic_path
from zoo.tasks.base import Task, genome_template

__all__ = [
    "DESCRIPTORS_STD",
    "FITNESS_STD",
    "FRESH_SEED_Z",
    "METRIC_ROWS",
    "REPRODUCE_DESCRIPTOR_TOL",
    "REPRODUCE_RTOL",
    "Agreement",
    "RobustEvaluation",
    "RobustProtocol",
    "agreement",
    "before_after",
    "check_output",
    "evaluate_episodes",
    "evaluate_robust",
    "is_robust",
    "reevaluate_archive",
    "save_artifact",
    "standard_error",
]

FITNESS_STD = "robust_fitness_std"
"""Per-elite extra of a robust archive: ``[n]`` standard deviation of the episode returns."""
DESCRIPTORS_STD = "robust_descriptors_std"
"""Per-elite extra of a robust archive: ``[n, k]`` standard deviation of the descriptors."""


@dataclasses.dataclass(frozen=True)
class RobustProtocol:
    """``episodes`` rollouts per genome from stochastic resets, keyed by ``seed``.

    Attributes:
        episodes: ``K``, the episodes per genome (at least 1).
        seed: episode ``j`` resets with ``jax.random.fold_in(jax.random.key(seed), j)``.
        reset: always ``"stochastic"`` (the task must be built with that reset).

    Raises:
        ConfigError: ``episodes`` below 1 or not an integer, a seed that is not an integer,
            another reset.
    """

    episodes: int
    seed: int = 0
    reset: Literal["stochastic"] = "stochastic"

    def __post_init__(self) -> None:
        k = self.episodes
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(
                f"the robust protocol needs episodes >= 1 (an integer: episodes per genome), "
                f"given {k!r}; e.g. --episodes 8"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ConfigError(f"the robust protocol's seed must be an integer, given {self.seed!r}")
        if self.reset != "stochastic":
            raise ConfigError(
                f"the robust protocol evaluates from stochastic resets, given reset={self.reset!r}"
            )

    def key(self) -> PRNGKeyArray:
        """The base key; episode ``j`` uses ``jax.random.fold_in(key, j)``."""
        return jax.random.key(int(self.seed))

    def record(self, task: Task) -> dict[str, Any]:
        """The protocol as ``config["evaluation"]`` stores it (with the task's reset noise)."""
        return {
            "protocol": "robust",
            "episodes": int(self.episodes),
            "seed": int(self.seed),
            "reset": self.reset,
            "reset_noise": task.reset_noise(),
            "episode_length": task.spec.episode_length,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RobustProtocol:
        """The protocol an artifact's ``config["evaluation"]`` records.

        Raises:
            ConfigError: the config records no robust protocol.
        """
        evaluation = config.get("evaluation") or {}
        if evaluation.get("protocol") != "robust":
            raise ConfigError(
                "this artifact records no robust evaluation protocol (config['evaluation']"
                f"['protocol'] is {evaluation.get('protocol')!r}); make one with "
                "`qdzoo reevaluate ARCHIVE --episodes K --out DIR`"
            )
        return cls(int(evaluation["episodes"]), int(evaluation.get("seed", 0)))


def is_robust(config: dict[str, Any]) -> bool:
    """Whether an artifact's config records the robust evaluation protocol."""
    return (config.get("evaluation") or {}).get("protocol") == "robust"


def _one(genome: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: x[None] if eqx.is_array(x) else x, genome)


@eqx.filter_jit
def evaluate_episodes(
    task: Task, policies: Any, key: PRNGKeyArray, episodes: int = 1
) -> tuple[Float[Array, "batch episodes"], Float[Array, "batch episodes k"]]:
    """Every genome rolled out ``episodes`` times, episode ``j`` from the reset of
    ``fold_in(key, j)`` for every genome: ``[B, K]``, ``[B, K, k]``.

    Each genome's episode is ``task.evaluate`` of that genome alone (a batch of one), so
    the numbers of a genome do not depend on the rest of the batch (up to float32 rounding,
    which another batch size may change in the last bits). Same signature as
    :func:`zoo.evaluation.evaluate_rollouts` (``evaluate_in_chunks(..., evaluate=...)``).
    """

    def episode(j: Array) -> tuple[Array, Array]:
        episode_key = jax.random.fold_in(key, j)

        def genome(g: Any) -> tuple[Array, Array]:
            result = task.evaluate(_one(g), episode_key)
            return result.fitness[0], result.descriptors[0]

        return eqx.filter_vmap(genome)(policies)

    fitness, descriptors = jax.vmap(episode)(jnp.arange(episodes))  # [K, B], [K, B, k]
    return fitness.T, jnp.swapaxes(descriptors, 0, 1)


@dataclasses.dataclass(frozen=True)
class RobustEvaluation(EpisodeStatistics):
    """Genomes evaluated under a :class:`RobustProtocol`: ``[B, K]`` returns and ``[B, K, k]``
    descriptors of every episode, with their means and standard deviations."""


def _check_task(task: Task, protocol: RobustProtocol) -> None:
    if task.spec.genome != "policy":
        raise TaskMismatchError(
            f"the robust protocol rolls policies out from stochastic resets; task "
            f"{task.spec.name!r} has {task.spec.genome} genomes and no reset (its evaluation "
            "is a pure function already): evaluate it once with task.evaluate"
        )
    if task.spec.reset != protocol.reset:
        raise TaskMismatchError(
            f"the robust protocol needs a task built with reset={protocol.reset!r}, given "
            f"{task!r} (reset={task.spec.reset!r}); build it with "
            f"zoo.tasks.make({task.spec.name!r}, ..., reset='stochastic')"
        )


def evaluate_robust(
    task: Task,
    genomes: Any,
    protocol: RobustProtocol,
    *,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RobustEvaluation:
    """Evaluate ``B`` genomes on ``protocol.episodes`` episodes each.

    Args:
        task: an episodic task built with ``reset="stochastic"``.
        genomes: a population of ``B`` policies.
        protocol: episodes and seed.
        batch_size: genomes per compiled evaluation (default all ``B``); the result depends
            on it only through float32 rounding.
        progress: called with the number of genomes done after each chunk.

    Returns:
        A :class:`RobustEvaluation`: means, standard deviations and per-episode values.

    Raises:
        TaskMismatchError: a task without stochastic resets.
        ConfigError: a ``batch_size`` below 1.
    """
    _check_task(task, protocol)
    size = jax.tree_util.tree_leaves(genomes)[0].shape[0]

    def population(_: int, rows: np.ndarray) -> Any:
        idx = jnp.asarray(rows)
        return jax.tree_util.tree_map(lambda x: x[idx] if eqx.is_array(x) else x, genomes)

    fitness, descriptors = evaluate_in_chunks(
        task,
        population,
        size,
        protocol.key(),
        batch_size=max(size, 1) if batch_size is None else batch_size,
        rollouts=protocol.episodes,
        evaluate=evaluate_episodes,
        progress=progress,
    )
    return RobustEvaluation(fitness, descriptors)


def _stochastic_task_config(config: dict[str, Any]) -> tuple[Task, dict[str, Any]]:
    """The artifact's task rebuilt with ``reset="stochastic"`` and its ``config["task"]``."""
    task_cfg = config["task"]
    if task_cfg["spec"]["genome"] != "policy":
        raise TaskMismatchError(
            f"`qdzoo reevaluate` rolls policies out from stochastic resets; the archive's task "
            f"{task_cfg['name']!r} has vector genomes and no reset (its fitness is a pure "
            "function of the genome): there is nothing to re-evaluate"
        )
    name, kwargs = task_cfg["name"], {**task_cfg["kwargs"], "reset": "stochastic"}
    # shared: a later re-evaluation of the saved archive (task_of) reuses the task object,
    # and with it every compiled evaluation
    task = cached_task(name, kwargs)
    return task, {"name": name, "kwargs": kwargs, "spec": task.spec.to_dict()}


def reevaluate_archive(
    artifact: ArchiveArtifact,
    episodes: int,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ArchiveArtifact:
    """The archive corrected by a robust re-evaluation of every elite.

    Every elite is evaluated under ``RobustProtocol(episodes, seed)`` on the artifact's task
    rebuilt with ``reset="stochastic"``, then inserted with its mean fitness and mean
    descriptors into an empty archive of the same tessellation and settings (MAP-Elites
    insertion: an elite whose mean descriptors fall into another cell competes there, so the
    result holds at most as many elites as before). The standard deviations are stored as
    per-elite extras (:data:`FITNESS_STD`, :data:`DESCRIPTORS_STD`); the extras the archive
    had (e.g. ASCII-ME's trajectory states) describe the one training episode, not the
    protocol's episodes, and are left out. The config's task switches to
    ``reset="stochastic"``, ``evaluation`` records the protocol
    (:meth:`RobustProtocol.record`) and ``reevaluation`` keeps the metrics before, the
    protocol the source archive was evaluated with, the number of elites re-evaluated, how
    many stayed in their cell, and the wall time.

    Args:
        artifact: an archive of policies.
        episodes: ``K``, episodes per elite.
        seed: the protocol's seed.
        batch_size: elites per compiled evaluation (default: the training batch size, or all
            elites); the result depends on it only through float32 rounding.
        progress: called with the number of elites done after each chunk.

    Raises:
        ConfigError: ``episodes`` below 1, a bad seed or ``batch_size``.
        TaskMismatchError: an archive of vector genomes (no reset to randomise).
    """
    protocol = RobustProtocol(episodes, seed)
    start = time.perf_counter()
    config = artifact.config
    task, task_config = _stochastic_task_config(config)
    cells = artifact.cells
    if batch_size is None:
        batch_size = int(config.get("training", {}).get("batch_size", 0)) or max(cells.size, 1)
    elites = artifact.genomes(cells)
    result = evaluate_robust(task, elites, protocol, batch_size=batch_size, progress=progress)

    source = artifact.archive
    k = source.descriptor_size
    extras_template = {
        FITNESS_STD: jnp.zeros((), jnp.float32),
        DESCRIPTORS_STD: jnp.zeros((k,), jnp.float32),
    }
    template = genome_template(artifact.task_spec, artifact.policy_spec)
    centroids = np.asarray(source.centroids) if source.tessellation == "cvt" else None
    archive = empty_archive(config["archive"], template, centroids, extras_template)
    extras = {
        FITNESS_STD: jnp.asarray(result.fitness_std, jnp.float32),
        DESCRIPTORS_STD: jnp.asarray(result.descriptors_std, jnp.float32),
    }
    if cells.size:
        archive, _ = archive.insert(
            elites, jnp.asarray(result.fitness), jnp.asarray(result.descriptors), extras
        )
    new_cells = np.asarray(source.cell_index(jnp.asarray(result.descriptors, jnp.float32)))
    before = {name: finite_or_none(v) for name, v in artifact.metrics().items()}
    reevaluation = {
        "protocol": "robust",
        "metrics_before": before,
        "evaluation_before": dict(config.get("evaluation") or {}),
        "task_kwargs_before": dict(config["task"]["kwargs"]),
        "elites_evaluated": int(cells.size),
        "elites_in_same_cell": int(np.sum(new_cells == cells)) if cells.size else 0,
        "batch_size": int(batch_size),
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    new_config = {
        **{key: value for key, value in config.items() if key not in ("files", "metrics")},
        "task": task_config,
        "evaluation": protocol.record(task),
        "reevaluation": reevaluation,
    }
    return ArchiveArtifact(archive, new_config)


def check_output(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a path, after checking that :func:`save_artifact` may write it.

    Raises:
        OutputExistsError: ``out`` exists (and is not an empty directory) without
            ``overwrite``.
    """
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputExistsError(
            f"{str(out)!r} exists and is not a directory; choose a new --out directory"
        )
    if out.exists() and not overwrite:
        if not (out.is_dir() and not any(out.iterdir())):
            raise OutputExistsError(
                f"{str(out)!r} already exists; choose a new --out directory or pass "
                "--overwrite to replace it"
            )
    return out


def save_artifact(artifact: ArchiveArtifact, out: str | Path, *, overwrite: bool = False) -> Path:
    """Save ``artifact`` as a new directory ``out``, atomically.

    The artifact is written to a temporary sibling of ``out`` and renamed into place, so
    ``out`` never holds a half-written or mixed artifact; with ``overwrite`` an existing
    ``out`` is replaced as a whole (none of its files stay).

    Raises:
        OutputExistsError: ``out`` exists (and is not an empty directory) without
            ``overwrite``.
    """
    out = check_output(out, overwrite)
    with atomic_path(out) as tmp:  # written beside out, swapped in whole
        artifact.save_pretrained(tmp)
    artifact.path = out
    return out


def standard_error(std: np.ndarray, episodes: int) -> np.ndarray:
    """The standard error of a mean over ``episodes`` episodes of standard deviation ``std``
    (``ddof=0`` estimate, corrected to ``ddof=1``)."""
    if episodes < 2:
        return np.full_like(np.asarray(std, np.float64), math.inf)
    return np.asarray(std) * math.sqrt(episodes / (episodes - 1)) / math.sqrt(episodes)


METRIC_ROWS = (
    ("QD score", "qd_score"),
    ("coverage", "coverage"),
    ("max fitness", "max_fitness"),
    ("mean fitness", "mean_fitness"),
    ("elites", "num_elites"),
)
"""The metrics compared before and after a robust re-evaluation (label, metrics key)."""


def before_after(config: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """``(label, before, after)`` for the :data:`METRIC_ROWS` of a robust archive's config
    (``config["reevaluation"]["metrics_before"]`` and ``config["metrics"]``); ``[]`` for an
    archive that was not re-evaluated under the robust protocol."""
    reevaluation = config.get("reevaluation") or {}
    if reevaluation.get("protocol") != "robust":
        return []
    before, after = reevaluation.get("metrics_before") or {}, config.get("metrics") or {}
    return [(label, before.get(key), after.get(key)) for label, key in METRIC_ROWS]


REPRODUCE_RTOL = 1e-3
"""Same seed: a stored mean fitness ``s`` is reproduced when ``|measured - s| <=
REPRODUCE_RTOL * max(1, |s|)``."""
REPRODUCE_DESCRIPTOR_TOL = 1e-2
"""Same seed: a stored mean descriptor is reproduced when it is within this fraction of the
descriptor's range (``descriptor_high - descriptor_low``). Evaluated in chunks of the recorded
batch size on the same platform, the means are reproduced bit for bit; another batch size or
platform rounds differently in the last bits, which a long rollout can amplify into a
different discrete event (a foot contact) in one episode."""
FRESH_SEED_Z = 3.0
"""Fresh seeds: a stored mean is reproduced when it is within ``FRESH_SEED_Z`` standard
errors of the difference of the two means."""


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How well a re-evaluation of a robust archive reproduces its stored means.

    Attributes:
        same_seed: whether the re-evaluation used the recorded seed (exact reproduction
            expected) or fresh seeds (agreement in standard errors).
        fitness_error: ``[n]`` ``|measured - stored|`` mean fitness.
        descriptor_error: ``[n]`` largest ``|measured - stored|`` over the descriptors.
        fitness_within: ``[n]`` whether the fitness is within the tolerance.
        descriptors_within: ``[n]`` whether every descriptor is within the tolerance.
        exact: ``[n]`` fitness and descriptors reproduced bit for bit.
    """

    same_seed: bool
    fitness_error: np.ndarray
    descriptor_error: np.ndarray
    fitness_within: np.ndarray
    descriptors_within: np.ndarray
    exact: np.ndarray

    @property
    def within(self) -> np.ndarray:
        """``[n]`` fitness and descriptors both within the tolerance."""
        return self.fitness_within & self.descriptors_within

    def summary(self) -> str:
        """One line: how many elites agree, under which tolerance."""
        n = self.within.size
        if self.same_seed:
            rule = (
                f"same seed: fitness within {REPRODUCE_RTOL:g} * max(1, |stored|), descriptors "
                f"within {REPRODUCE_DESCRIPTOR_TOL:g} of their range"
            )
        else:
            rule = f"fresh seed: within {FRESH_SEED_Z:g} standard errors"
        exact = f", {int(self.exact.sum())} bit for bit" if self.same_seed else ""
        return (
            f"agreement ({rule}): {int(self.within.sum())} of {n} elites{exact} "
            f"(fitness {int(self.fitness_within.sum())}, descriptors "
            f"{int(self.descriptors_within.sum())}); largest error: fitness "
            f"{float(self.fitness_error.max(initial=0.0)):.4g}, descriptors "
            f"{float(self.descriptor_error.max(initial=0.0)):.4g}"
        )


def agreement(artifact: ArchiveArtifact, result: Reevaluation, *, same_seed: bool) -> Agreement:
    """Compare a robust archive's stored means with a re-evaluation of its elites.

    Args:
        artifact: a robust archive (its extras hold the stored standard deviations).
        result: :func:`zoo.evaluation.reevaluate` of some of its cells.
        same_seed: ``result`` used the recorded seed (then the means must be reproduced to
            :data:`REPRODUCE_RTOL` and :data:`REPRODUCE_DESCRIPTOR_TOL`); else both means
            are compared in standard errors (:data:`FRESH_SEED_Z`, from the stored and the
            measured standard deviations).

    Raises:
        ConfigError: ``artifact`` records no robust protocol.
    """
    protocol = RobustProtocol.from_config(artifact.config)
    f_err = np.abs(result.fitness - result.stored_fitness)
    d_diff = np.abs(result.descriptors - result.stored_descriptors)
    if same_seed:
        spec = artifact.task_spec
        span = np.asarray(spec.descriptor_high) - np.asarray(spec.descriptor_low)
        f_ok = f_err <= REPRODUCE_RTOL * np.maximum(1.0, np.abs(result.stored_fitness))
        d_ok = d_diff <= REPRODUCE_DESCRIPTOR_TOL * span
    else:
        extras = artifact.archive.extras
        if FITNESS_STD not in extras or DESCRIPTORS_STD not in extras:
            raise ArtifactError(
                f"a robust archive stores the per-elite extras {FITNESS_STD!r} and "
                f"{DESCRIPTORS_STD!r}; this one has {sorted(extras)}. Make it again with "
                "`qdzoo reevaluate`, or compare with the recorded seed"
            )
        f_std = np.asarray(extras[FITNESS_STD])[result.cells]
        d_std = np.asarray(extras[DESCRIPTORS_STD])[result.cells]
        episodes = result.episode_fitness.shape[1]
        f_se = np.hypot(
            standard_error(f_std, protocol.episodes),
            standard_error(result.episode_fitness.std(axis=1), episodes),
        )
        d_se = np.hypot(
            standard_error(d_std, protocol.episodes),
            standard_error(result.episode_descriptors.std(axis=1), episodes),
        )
        f_ok = f_err <= FRESH_SEED_Z * f_se + 1e-6
        d_ok = d_diff <= FRESH_SEED_Z * d_se + 1e-6
    return Agreement(
        same_seed=same_seed,
        fitness_error=f_err,
        descriptor_error=d_diff.max(axis=1, initial=0.0),
        fitness_within=f_ok,
        descriptors_within=d_ok.all(axis=1),
        exact=(f_err == 0) & (d_diff == 0).all(axis=1),
    )
