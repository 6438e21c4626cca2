"""Archives of other QD libraries as qdzoo archive artifacts: pyribs and QDax.

Neither pyribs nor QDax has a file format for its archives, so both importers read the
objects in memory and return an :class:`~zoo.archive_artifact.ArchiveArtifact`, which can
then be saved, pushed, re-evaluated and distilled like a trained one::

    import zoo

    artifact = zoo.from_pyribs(ribs_archive, task="point-maze")     # GridArchive, CVTArchive
    artifact = zoo.from_qdax(repertoire, task=task, policy=spec)      # MapElitesRepertoire
    artifact.save_pretrained("runs/imported")
    zoo.evaluation.reevaluate(artifact)            # qdzoo's own rollouts of every elite

**Stored values come from the source.** The fitness and descriptors of the artifact are the
ones the source archive holds, measured by the source's evaluation code. Re-evaluating the
elites with qdzoo's task (:func:`zoo.evaluation.reevaluate`) gives the same numbers only
when that code computed what the qdzoo task computes; ``config["source"]`` records where the
values came from.

**Same cells.** Each elite keeps its cell: a pyribs grid cell is the qdzoo grid cell of the
same dims and bounds (the same ``floor((dims * (m - low) + epsilon) / (high - low))`` rule),
a CVT cell is the nearest of the source's own centroids (the artifact stores them). An elite
whose stored descriptors fall into another cell under qdzoo's rule is refused
(:class:`~zoo.errors.ConfigError`), since the artifact could not be loaded back.

**Genomes.** For a task with policy genomes:

- pyribs solutions are flat vectors in the leaf order of ``jax.flatten_util.ravel_pytree``
  applied to a :class:`models.policy.MLPPolicy`: every weight matrix ``W_0 .. W_{L-1}``
  (shape ``[out, in]``, row-major, so ``W_i[o, j]`` is at offset ``o * in + j`` of its
  block), then every bias ``b_0 .. b_{L-1}``, then ``obs_mean`` and ``obs_std`` when the
  policy normalises observations. That is ``models.policy.flatten_population`` of a
  population, and ``ArchiveArtifact.data()["solution"]`` of an artifact.
- QDax genotypes are the parameters of a flax MLP (``qdax.core.neuroevolution.networks.
  networks.MLP``): ``{"params": {"Dense_0": {"kernel": [cells, in, out], "bias": [cells,
  out]}, "Dense_1": ...}}``; layer ``i`` computes ``activation(h @ kernel_i + bias_i)``, so
  ``W_i = kernel_i.T``. A flax MLP's activations are not in its parameters: pass a
  :class:`~models.policy.PolicySpec` whose ``activation`` and ``output_activation`` are the
  network's (QDax's ``MLP`` defaults to ``relu`` and no final activation; its examples use
  ``tanh`` and a ``tanh`` output, which is what ``policy=None`` assumes).

For a task with vector genomes (``arm``, ``lp-sphere``) the solution or genotype *is* the
genome, of length ``task.spec.genome_size``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from models.policy import MLPPolicy, PolicySpec, unflatten_population
from zoo import tasks
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_config
from zoo.errors import ConfigError, NonFiniteError, ShapeError, TaskMismatchError
from zoo.tasks.base import Task, TaskSpec, genome_template

__all__ = ["SOURCE_NOTE", "from_pyribs", "from_qdax"]

SOURCE_NOTE = (
    "fitness and descriptors are the values stored by the source library (measured by its "
    "evaluation code, not by qdzoo); a re-evaluation with the recorded task may differ"
)
"""What ``config["source"]["note"]`` of an imported artifact says."""

_RIBS_ARCHIVES = ("GridArchive", "CVTArchive")
_DENSE = re.compile(r"Dense_(\d+)")
_BOUNDS_TOLERANCE = 1e-6


# ------------------------------------------------------------------------------- pyribs
def from_pyribs(
    archive: Any,
    *,
    task: Task | str,
    policy: PolicySpec | None = None,
    name: str | None = None,
) -> ArchiveArtifact:
    """A pyribs ``GridArchive`` or ``CVTArchive`` of flat solution vectors as an artifact.

    Reads ``archive.data()`` (``solution [n, d]``, ``objective [n]``, ``measures [n, k]``,
    ``threshold [n]``, ``index [n]``) and the archive's tessellation (``dims``,
    ``lower_bounds``, ``upper_bounds``, ``epsilon`` of a grid; ``centroids`` of a CVT) and
    threshold settings (``learning_rate``, ``threshold_min``: a CMA-MAE archive keeps its
    thresholds). The QD score offset is the task's (``task.spec.qd_offset``), so that QD
    scores compare with qdzoo archives of the task; pyribs' ``qd_score_offset`` is recorded
    under ``config["source"]``.

    Args:
        archive: a ``ribs.archives.GridArchive`` or ``CVTArchive`` (pyribs 0.12) whose
            solutions are flat vectors: policies flattened as the module docstring says, or
            the genomes of a vector task.
        task: the task the solutions were evaluated on: a :class:`~zoo.tasks.base.Task` or a
            registry name (``zoo.tasks.make(name)``). Its descriptors must be the archive's
            measures, with the same bounds.
        policy: the MLP the vectors flatten (default: ``task.default_policy()``); ignored
            for vector tasks.
        name: recorded as ``config["source"]["name"]`` (e.g. the experiment it came from).

    Returns:
        An :class:`ArchiveArtifact` with one elite per pyribs elite, in the same cell; its
        config says it was imported (``config["source"]``: library, version, archive type).

    Raises:
        ConfigError: another archive type, a grid ``epsilon`` other than 1e-6, an empty or
            non-numeric solution, or an elite whose measures fall into another cell under
            qdzoo's rule than the one pyribs stores it in.
        TaskMismatchError: measures of another dimension or bounds than the task's
            descriptors, or a policy whose sizes are not the task's.
        ShapeError: solutions whose length is not the policy's (or genome's) size.
        NonFiniteError: NaN or infinite values in a stored elite.
    """
    kind = type(archive).__name__
    if kind not in _RIBS_ARCHIVES or not callable(getattr(archive, "data", None)):
        raise ConfigError(
            f"from_pyribs imports a ribs.archives.GridArchive or CVTArchive, given {kind}; "
            "for another archive type, insert its elites into a GridArchive first"
        )
    task = _task(task)
    spec = task.spec
    low = _floats(archive.lower_bounds)
    high = _floats(archive.upper_bounds)
    _check_measures(spec, len(low), "the pyribs archive's measures", f"{kind}")
    _check_bounds(spec, low, high, f"the pyribs {kind}'s ranges")
    if kind == "GridArchive" and not math.isclose(float(archive.epsilon), 1e-6):
        raise ConfigError(
            f"the pyribs GridArchive has epsilon={float(archive.epsilon)!r}; qdzoo archives "
            "index cells with pyribs' default epsilon=1e-6. Rebuild the pyribs archive with "
            "the default epsilon (add its data() to a new GridArchive) and import that"
        )
    task, policy = _task_and_policy(task, policy)
    spec = task.spec
    data = archive.data()
    solutions = np.asarray(data["solution"])
    n = solutions.shape[0]
    if solutions.ndim != 2 or not np.issubdtype(solutions.dtype, np.number):
        raise ConfigError(
            f"from_pyribs needs solutions that are flat numeric vectors (solution_dim an "
            f"integer), given solutions of shape {solutions.shape} and dtype "
            f"{solutions.dtype}; flatten each policy with models.policy.flatten_population"
        )
    genomes = _unflatten(solutions, spec, policy, "pyribs solution")
    learning_rate = float(archive.learning_rate)
    threshold_min = float(archive.threshold_min)
    common = dict(
        learning_rate=learning_rate, threshold_min=threshold_min, qd_offset=spec.qd_offset
    )
    template = genome_template(spec, policy)
    if kind == "GridArchive":
        empty = Archive.grid(template, _ints(archive.dims), low, high, **common)
    else:
        empty = Archive.cvt(
            template, np.asarray(archive.centroids, np.float64), low, high, **common
        )
    filled = _fill(
        empty,
        cells=np.asarray(data["index"], np.int64).reshape(n),
        genomes=genomes,
        fitness=np.asarray(data["objective"]).reshape(n),
        descriptors=np.asarray(data["measures"]).reshape(n, -1),
        thresholds=np.asarray(data["threshold"]).reshape(n),
        where=f"the pyribs {kind}",
    )
    source = {
        "library": "ribs",
        "version": _version("ribs"),
        "archive": kind,
        "name": name,
        "num_elites": int(n),
        "qd_score_offset": float(archive.qd_score_offset),
        "note": SOURCE_NOTE,
    }
    return _artifact(spec, policy, filled, source)


# --------------------------------------------------------------------------------- QDax
def from_qdax(
    repertoire: Any,
    *,
    task: Task | str,
    policy: PolicySpec | None = None,
    name: str | None = None,
    version: str | None = None,
) -> ArchiveArtifact:
    """A QDax ``MapElitesRepertoire`` (in memory) as an artifact with the same CVT cells.

    Reads the repertoire's fields; nothing of QDax or flax is imported, so any object with
    these fields works (numpy or JAX arrays):

    - ``genotypes``: a pytree whose leaves have a leading ``cells`` axis: flax MLP
      parameters (module docstring) for a policy task, a ``[cells, genome_size]`` array for
      a vector task;
    - ``fitnesses``: ``[cells]`` or ``[cells, 1]``; ``-inf`` (any non-finite value) marks an
      empty cell;
    - ``descriptors``: ``[cells, k]``;
    - ``centroids``: ``[cells, k]``: the artifact is a CVT archive with these centroids, so
      cell ``i`` of the repertoire is cell ``i`` of the artifact.

    The archive bounds are the task's descriptor bounds (a CVT only records them); the QD
    score offset is the task's (QDax adds its reward offset to the fitness in its metrics
    only, so the stored fitness is the plain return).

    Args:
        repertoire: the repertoire (``qdax.core.containers.mapelites_repertoire.
            MapElitesRepertoire`` or any object with the fields above).
        task: the task the genotypes were evaluated on (a :class:`~zoo.tasks.base.Task` or a
            registry name).
        policy: the spec of the flax MLP: its hidden sizes must be the kernels' and its
            activations the network's. Default: hidden sizes read from the kernels, ``tanh``
            hidden and output activations (QDax's examples). Ignored for vector tasks.
        name: recorded as ``config["source"]["name"]``.
        version: the QDax version recorded in ``config["source"]`` (default: the installed
            ``qdax`` package's, if any).

    Returns:
        An :class:`ArchiveArtifact` holding the occupied cells of the repertoire.

    Raises:
        ConfigError: a missing field, genotypes that are not a flax MLP's parameters, or an
            elite whose descriptors are nearer another centroid than its own.
        TaskMismatchError: descriptors or centroids of another dimension than the task's,
            centroids outside the task's descriptor bounds, or layer sizes or a policy that
            do not fit the task.
        ShapeError: fields whose shapes disagree.
        NonFiniteError: NaN or infinite descriptors or parameters in an occupied cell.
    """
    for field in ("genotypes", "fitnesses", "descriptors", "centroids"):
        if not hasattr(repertoire, field):
            raise ConfigError(
                f"from_qdax reads a MapElitesRepertoire's genotypes, fitnesses, descriptors "
                f"and centroids; the given {type(repertoire).__name__} has no {field!r}"
            )
    task = _task(task)
    spec = task.spec
    centroids = np.asarray(repertoire.centroids, np.float64)
    descriptors = np.asarray(repertoire.descriptors)
    fitnesses = np.asarray(repertoire.fitnesses)
    if centroids.ndim != 2:
        raise ShapeError(f"centroids must be [cells, k], given shape {centroids.shape}")
    num_cells = centroids.shape[0]
    _check_measures(spec, centroids.shape[1], "the repertoire's centroids", "repertoire")
    if descriptors.shape != centroids.shape:
        raise ShapeError(
            f"descriptors must have the centroids' shape [cells, k] = {centroids.shape}, "
            f"given {descriptors.shape}"
        )
    if fitnesses.shape not in ((num_cells,), (num_cells, 1)):
        raise ShapeError(
            f"fitnesses must be [cells] or [cells, 1] with cells = {num_cells} (one per "
            f"centroid), given {fitnesses.shape}"
        )
    low, high = np.asarray(spec.descriptor_low), np.asarray(spec.descriptor_high)
    slack = _BOUNDS_TOLERANCE * np.maximum(1.0, high - low)
    outside = np.any((centroids < low - slack) | (centroids > high + slack), axis=1)
    if outside.any():
        raise TaskMismatchError(
            f"{int(outside.sum())} of the repertoire's {num_cells} centroids lie outside the "
            f"descriptor bounds of task {spec.name!r} (low={list(spec.descriptor_low)}, "
            f"high={list(spec.descriptor_high)}), e.g. centroid {int(np.argmax(outside))} = "
            f"{centroids[np.argmax(outside)].tolist()}; the repertoire was made for other "
            "descriptors: pass the task it was evaluated on"
        )
    fitness = fitnesses.reshape(num_cells)
    cells = np.flatnonzero(np.isfinite(fitness))
    genotypes = repertoire.genotypes
    if spec.genome == "vector":
        rows = _leading(np.asarray(genotypes), num_cells, "genotypes")[cells]
        genomes, policy = _unflatten(rows.reshape(cells.size, -1), spec, None, "genotype"), None
    else:
        layers = _dense_layers(genotypes, num_cells)
        policy = _policy_of_layers(spec, policy, layers)
        task, policy = _task_and_policy(task, policy)
        spec = task.spec
        weights = tuple(jnp.asarray(np.swapaxes(k[cells], -1, -2), jnp.float32) for k, _ in layers)
        biases = tuple(jnp.asarray(b[cells], jnp.float32) for _, b in layers)
        genomes = MLPPolicy(
            weights=weights,
            biases=biases,
            obs_mean=None,
            obs_std=None,
            activation=policy.activation,
            output_activation=policy.output_activation,
        )
    empty = Archive.cvt(
        genome_template(spec, policy), centroids, low, high, qd_offset=spec.qd_offset
    )
    filled = _fill(
        empty,
        cells=cells,
        genomes=genomes,
        fitness=fitness[cells],
        descriptors=descriptors[cells],
        thresholds=fitness[cells],
        where="the QDax repertoire",
    )
    source = {
        "library": "qdax",
        "version": version if version is not None else _version("qdax"),
        "archive": type(repertoire).__name__,
        "name": name,
        "num_elites": int(cells.size),
        "note": SOURCE_NOTE,
    }
    return _artifact(spec, policy, filled, source)


# ------------------------------------------------------------------------------ helpers
def _task(task: Task | str) -> Task:
    if isinstance(task, str):
        return tasks.make(task)
    if not isinstance(task, Task):
        raise ConfigError(
            f"task must be a zoo task or a registry name, given {type(task).__name__}; e.g. "
            "task='point-maze' or task=zoo.tasks.make('walker2d-uni', episode_length=100)"
        )
    return task


def _task_and_policy(task: Task, policy: PolicySpec | None) -> tuple[Task, PolicySpec | None]:
    """The task (rebuilt with the policy's hidden sizes as its default policy's, as training
    records it) and the checked policy; ``(task, None)`` for vector tasks."""
    spec = task.spec
    if spec.genome == "vector":
        return task, None
    policy = policy if policy is not None else task.default_policy()
    if not isinstance(policy, PolicySpec):
        raise ConfigError(
            f"policy must be a models.policy.PolicySpec or None, given {type(policy).__name__}"
        )
    if (policy.observation_size, policy.action_size) != (
        spec.observation_size,
        spec.action_size,
    ):
        raise TaskMismatchError(
            f"the policy maps {policy.observation_size} observations to {policy.action_size} "
            f"actions, task {spec.name!r} has {spec.observation_size} and {spec.action_size}; "
            "pass the task the policies were trained on"
        )
    hidden = list(policy.hidden_sizes)
    if "policy_hidden_sizes" in spec.kwargs and spec.kwargs["policy_hidden_sizes"] != hidden:
        task = tasks.make(spec.name, **{**spec.kwargs, "policy_hidden_sizes": hidden})
    return task, policy


def _check_measures(spec: TaskSpec, k: int, what: str, where: str) -> None:
    if k != spec.descriptor_size:
        raise TaskMismatchError(
            f"{what} have {k} dimension(s), task {spec.name!r} has {spec.descriptor_size} "
            f"descriptors ({', '.join(spec.descriptor_names)}); the {where} was made for other "
            "descriptors: pass the task whose descriptors it stores"
        )


def _check_bounds(
    spec: TaskSpec, low: tuple[float, ...], high: tuple[float, ...], what: str
) -> None:
    expected = (spec.descriptor_low, spec.descriptor_high)
    given = np.asarray([low, high])
    scale = np.maximum(1.0, np.abs(np.asarray(expected)))
    if np.any(np.abs(given - np.asarray(expected)) > _BOUNDS_TOLERANCE * scale):
        raise TaskMismatchError(
            f"{what} are low={list(low)}, high={list(high)}; task {spec.name!r} has descriptor "
            f"bounds low={list(spec.descriptor_low)}, high={list(spec.descriptor_high)}. The "
            "archive must tessellate the task's descriptor space: pass the task it was made "
            "for, or insert its data() into a pyribs archive with the task's ranges"
        )


def _unflatten(rows: np.ndarray, spec: TaskSpec, policy: PolicySpec | None, what: str) -> Any:
    """``[n, d]`` flat genomes -> a population of the task's genome pytree."""
    template = genome_template(spec, policy)
    expected = int(ravel_pytree(template)[0].size)
    if rows.shape[1] != expected:
        if policy is None:
            layout = f"the genome of task {spec.name!r}"
        else:
            normaliser = ", then obs_mean, obs_std" if policy.normalise_observations else ""
            layout = (
                f"an MLP {policy.layer_sizes} flattened with ravel_pytree: weights [out, in] "
                f"of every layer, then biases{normaliser}"
            )
        raise ShapeError(
            f"each {what} must hold {expected} numbers ({layout}), given vectors of length "
            f"{rows.shape[1]}; pass the policy= spec the vectors were made with, or the task "
            "they belong to"
        )
    values = jnp.asarray(rows, jnp.float32)
    if spec.genome == "vector":
        return values
    return unflatten_population(template, values)


def _leading(x: np.ndarray, num_cells: int, what: str) -> np.ndarray:
    if x.ndim < 1 or x.shape[0] != num_cells:
        raise ShapeError(
            f"every leaf of {what} must have a leading axis of {num_cells} cells (one per "
            f"centroid), given shape {x.shape}"
        )
    return x


def _dense_layers(genotypes: Any, num_cells: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(kernel [cells, in, out], bias [cells, out]), ...]`` of flax MLP parameters."""
    params = genotypes.get("params", genotypes) if isinstance(genotypes, Mapping) else None
    names = sorted(params, key=str) if isinstance(params, Mapping) else []
    if not names or any(not isinstance(k, str) or not _DENSE.fullmatch(k) for k in names):
        raise ConfigError(
            "the genotypes of a policy task must be flax MLP parameters {'params': "
            "{'Dense_0': {'kernel': [cells, in, out], 'bias': [cells, out]}, ...}}, given "
            f"{_describe(genotypes)}; for a vector task, pass its task"
        )
    names.sort(key=lambda k: int(_DENSE.fullmatch(k).group(1)))  # type: ignore[union-attr]
    if [int(_DENSE.fullmatch(k).group(1)) for k in names] != list(range(len(names))):  # type: ignore[union-attr]
        raise ConfigError(f"the Dense layers must be Dense_0 .. Dense_{{L-1}}, given {names}")
    layers = []
    for key in names:
        layer = params[key]
        if (
            not isinstance(layer, Mapping)
            or "kernel" not in layer
            or set(layer) - {"kernel", "bias"}
        ):
            raise ConfigError(
                f"genotypes {key!r} must hold 'kernel' (and 'bias'), given {_describe(layer)}"
            )
        kernel = _leading(np.asarray(layer["kernel"]), num_cells, f"genotypes {key!r}")
        if kernel.ndim != 3:
            raise ShapeError(
                f"genotypes {key!r} kernel must be [cells, in, out], given {kernel.shape}"
            )
        bias = (
            np.asarray(layer["bias"])
            if "bias" in layer
            else np.zeros((num_cells, kernel.shape[2]), kernel.dtype)
        )
        if bias.shape != (num_cells, kernel.shape[2]):
            raise ShapeError(
                f"genotypes {key!r} bias must be [cells, out] = {(num_cells, kernel.shape[2])}, "
                f"given {bias.shape}"
            )
        layers.append((kernel, bias))
    for i, ((a, _), (b, _)) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        if a.shape[2] != b.shape[1]:
            raise ShapeError(
                f"Dense_{i} outputs {a.shape[2]} numbers but Dense_{i + 1} takes {b.shape[1]}"
            )
    return layers


def _policy_of_layers(
    spec: TaskSpec, policy: PolicySpec | None, layers: list[tuple[np.ndarray, np.ndarray]]
) -> PolicySpec:
    sizes = (layers[0][0].shape[1], *(k.shape[2] for k, _ in layers))
    if (sizes[0], sizes[-1]) != (spec.observation_size, spec.action_size):
        raise TaskMismatchError(
            f"the flax MLP maps {sizes[0]} observations to {sizes[-1]} actions, task "
            f"{spec.name!r} has {spec.observation_size} and {spec.action_size}; pass the task "
            "the repertoire was trained on"
        )
    if policy is None:
        return PolicySpec(sizes[0], sizes[-1], tuple(sizes[1:-1]), "tanh", "tanh")
    if policy.normalise_observations or policy.layer_sizes != sizes:
        raise TaskMismatchError(
            f"the policy spec has layer sizes {policy.layer_sizes}"
            f"{' and an observation normaliser' if policy.normalise_observations else ''}; "
            f"the flax MLP's kernels have {sizes} and no normaliser. Pass PolicySpec("
            f"{sizes[0]}, {sizes[-1]}, hidden_sizes={tuple(sizes[1:-1])}, activation=..., "
            "output_activation=...) with the network's activations"
        )
    return policy


def _fill(
    archive: Archive,
    *,
    cells: np.ndarray,
    genomes: Any,
    fitness: np.ndarray,
    descriptors: np.ndarray,
    thresholds: np.ndarray,
    where: str,
) -> Archive:
    """``archive`` with the rows stored at ``cells``, after checking each row's cell."""
    n = cells.shape[0]
    dtype = archive.fitness.dtype
    fitness = np.asarray(fitness, dtype)
    descriptors = np.asarray(descriptors, dtype).reshape(n, archive.descriptor_size)
    thresholds = np.asarray(thresholds, dtype)
    for label, values in (
        ("fitness", fitness),
        ("descriptors", descriptors),
        ("thresholds", thresholds),
        *(
            (f"genome leaf {i}", np.asarray(leaf))
            for i, leaf in enumerate(jax.tree_util.tree_leaves(genomes))
        ),
    ):
        bad = ~np.isfinite(values.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise NonFiniteError(
                f"{where} holds NaN or infinite {label} for {int(bad.sum())} elite(s), in "
                f"cells {cells[bad][:10].tolist()}; a qdzoo archive stores finite elites only: "
                "drop those elites before importing"
            )
    if n and (cells.min() < 0 or cells.max() >= archive.num_cells):
        raise ConfigError(
            f"{where} stores elites in cells outside [0, {archive.num_cells}), e.g. "
            f"{cells[(cells < 0) | (cells >= archive.num_cells)][:5].tolist()}"
        )
    ours = np.asarray(archive.cell_index(jnp.asarray(descriptors))) if n else cells
    moved = np.flatnonzero(ours != cells)
    if moved.size:
        i = moved[0]
        raise ConfigError(
            f"{moved.size} of the {n} elites of {where} fall into another cell under qdzoo's "
            f"cell rule than the one they are stored in (e.g. descriptors "
            f"{descriptors[i].tolist()} stored in cell {cells[i]}, qdzoo's cell {ours[i]}); "
            "the source uses another tessellation rule (grid epsilon, ties, float precision). "
            "Re-insert those elites into the source archive, or drop them, before importing"
        )
    return archive.with_elites(cells, genomes, fitness, descriptors, thresholds)


def _artifact(
    spec: TaskSpec, policy: PolicySpec | None, archive: Archive, source: dict[str, Any]
) -> ArchiveArtifact:
    label = f"{source['library']} {source['version'] or ''}".strip()
    algorithm = {
        "name": f"imported-{source['library']}",
        "summary": f"imported from a {label} {source['archive']}; {SOURCE_NOTE}",
        "hyperparameters": {},
        "citation": "",
    }
    config = archive_config(spec, policy, archive, seed=0, algorithm=algorithm, source=source)
    return ArchiveArtifact(archive, config)


def _version(package: str) -> str | None:
    try:
        return package_version(package)
    except PackageNotFoundError:
        return None


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, np.float64).reshape(-1))


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(values).reshape(-1))


def _describe(tree: Any) -> str:
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in list(tree.items())[:6]) + "}"
    shape = getattr(tree, "shape", None)
    return f"array{tuple(shape)}" if shape is not None else type(tree).__name__
