"""A trained archive as a shareable artifact: ``config.json`` + ``archive.safetensors`` + card.

The directory layout and every config key are documented in ``docs/FORMAT.md``. Only the
occupied cells are stored. Loading checks the format version, the sha256 of every weight
file and every array's shape against the config before anything is built.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from hub_cards import TOUR_NAME
from models.policy import PolicySpec
from zoo.archive import Archive
from zoo.artifact import (
    POLICY_FIELDS,
    TASK_FIELDS,
    Artifact,
    finite_or_none,
    library_versions,
)
from zoo.errors import (
    ArtifactError,
    ConfigError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
)
from zoo.serialization import FIX_LOADED, Field, arrays_to_tree, load_arrays, tree_to_arrays
from zoo.tasks.base import TaskSpec, genome_template

if TYPE_CHECKING:
    import pandas

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "archive.safetensors"
CARD_NAME = "README.md"
HEATMAP_NAME = "heatmap.png"
LABELS_NAME = "labels.json"
"""Behaviour labels of the elites (:mod:`zoo.labels`, ``qdzoo label``), when present."""
ARTIFACT_FILES = (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CARD_NAME,
    HEATMAP_NAME,
    TOUR_NAME,
    "metrics.jsonl",
    LABELS_NAME,
)
"""The files of an artifact directory that are published when present (a run's checkpoint/
is not)."""
DATA_RETURN_TYPES = ("dict", "pandas")
"""What :meth:`ArchiveArtifact.data` can return."""


def label_examples(path: Path, count: int = 2) -> list[str] | None:
    """The ``count`` most common labels of the labels file ``path`` for the card to quote:
    None when there is no such file, ``[]`` when it cannot be read as one."""
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text())["labels"]
        texts = [str(r["label"]) for r in records]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [text for text, _ in Counter(texts).most_common(count)]


CONFIG_FIELDS: tuple[Field, ...] = (
    *TASK_FIELDS,
    *POLICY_FIELDS,
    Field("archive", "dict"),
    Field("archive.tessellation", "str", choices=("grid", "cvt")),
    Field("archive.grid_shape", "list[positive int]", nullable=True, optional=True),
    Field("archive.num_cells", "positive int"),
    Field("archive.low", "list[number]"),
    Field("archive.high", "list[number]"),
    Field("archive.learning_rate", "finite number"),
    Field("archive.threshold_min", "finite number", nullable=True),
    Field("archive.qd_offset", "finite number"),
    Field("archive.descriptor_names", "list[str]", optional=True),
    Field("genome_dtype", "str", optional=True, choices=("float32", "float16")),
    Field("evaluation", "dict", optional=True),
    Field("evaluation.seed", "int", optional=True),
    Field("evaluation.protocol", "str", optional=True, choices=("robust",)),
    Field("evaluation.episodes", "positive int", optional=True),
)
"""The schema of an archive's ``config.json`` (``docs/FORMAT.md``), checked on save and load."""

STORED_ARRAYS = ("cells", "fitness", "descriptors", "thresholds", "centroids")
"""The arrays of ``archive.safetensors`` besides ``genomes*`` and ``extras.*``."""


def archive_spec(archive: Archive, descriptor_names: tuple[str, ...]) -> dict[str, Any]:
    """The static description of an archive as stored under ``config["archive"]``."""
    return {
        "tessellation": archive.tessellation,
        "grid_shape": list(archive.grid_shape) if archive.grid_shape else None,
        "num_cells": archive.num_cells,
        "low": list(archive.low),
        "high": list(archive.high),
        "learning_rate": archive.learning_rate,
        "threshold_min": finite_or_none(archive.threshold_min),
        "qd_offset": archive.qd_offset,
        "descriptor_names": list(descriptor_names),
    }


def archive_config(
    spec: TaskSpec,
    policy: PolicySpec | None,
    archive: Archive,
    *,
    seed: int,
    **sections: Any,
) -> dict[str, Any]:
    """The ``config.json`` of an archive artifact before saving (``docs/FORMAT.md``).

    Args:
        spec: the task the elites were evaluated on.
        policy: the spec of the stored policies (``None`` for vector genomes).
        archive: the archive (its tessellation and threshold settings are recorded).
        seed: the seed of the re-evaluation protocol (``evaluation.seed``).
        sections: further top-level entries, in order (``algorithm``, ``training``, ...),
            placed between ``archive`` and ``evaluation``.
    """
    return {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": None if policy is None else policy.to_dict(),
        "archive": archive_spec(archive, spec.descriptor_names),
        **sections,
        "evaluation": {"reset": spec.reset, "episode_length": spec.episode_length, "seed": seed},
        "library_versions": library_versions(),
    }


def empty_archive(
    spec: dict[str, Any],
    template: Any,
    centroids: np.ndarray | None = None,
    extras_template: dict[str, Any] | None = None,
) -> Archive:
    """An empty archive built from ``config["archive"]`` (CVT needs its centroids)."""
    tmin = spec["threshold_min"]
    kwargs = dict(
        learning_rate=float(spec["learning_rate"]),
        threshold_min=-math.inf if tmin is None else float(tmin),
        qd_offset=float(spec["qd_offset"]),
        extras_template=extras_template,
    )
    if spec["tessellation"] == "grid":
        return Archive.grid(template, spec["grid_shape"], spec["low"], spec["high"], **kwargs)
    if spec["tessellation"] == "cvt":
        if centroids is None:
            raise ArtifactError("a CVT archive needs its centroids; none were stored")
        return Archive.cvt(template, jnp.asarray(centroids), spec["low"], spec["high"], **kwargs)
    raise ArtifactError(f"unknown tessellation {spec['tessellation']!r}; expected grid or cvt")


class ArchiveArtifact(Artifact):
    """An :class:`Archive` plus the config that says how it was made and how to re-evaluate it.

    Build one with :func:`load_archive` (or :meth:`from_pretrained`), or from training.
    ``artifact.archive`` is the pytree; ``artifact.config`` the JSON-able dict. The occupied
    cells read as numpy arrays (:attr:`cells`, :attr:`fitness`, :attr:`descriptors`) or as one
    table (:meth:`data`)::

        artifact = zoo.load_archive("walker2d-uni-map-elites")
        best = artifact.cells[artifact.fitness.argmax()]
        frame = artifact.data("pandas")    # one row per elite
    """

    kind: ClassVar[str] = "archive"
    format_version: ClassVar[int] = FORMAT_VERSION
    written_by: ClassVar[str] = "ArchiveArtifact.save_pretrained or `qdzoo train`"
    description: ClassVar[str] = "archive"
    published_files: ClassVar[tuple[str, ...]] = ARTIFACT_FILES
    config_fields: ClassVar[tuple[Field, ...]] = CONFIG_FIELDS

    def __init__(self, archive: Archive, config: dict[str, Any]) -> None:
        self.archive = archive
        self.config = config
        self.path: Path | None = None

    # ----------------------------------------------------------------- accessors
    @property
    def task_spec(self) -> TaskSpec:
        """The static facts of the task the archive was trained on (``config["task"]["spec"]``)."""
        t = self.config["task"]["spec"]
        for k in ("descriptor_names", "descriptor_low", "descriptor_high"):
            t = {**t, k: tuple(t[k])}
        return TaskSpec(**t)

    @property
    def policy_spec(self) -> PolicySpec | None:
        """The spec of the stored policies (``None`` for vector genomes)."""
        p = self.config.get("policy")
        return None if p is None else PolicySpec.from_dict(p)

    def metrics(self) -> dict[str, float]:
        """QD score, coverage, best/mean fitness, number of elites (see :meth:`Archive.metrics`)."""
        return {k: float(v) for k, v in self.archive.metrics().items()}

    def elite_indices(self) -> np.ndarray:
        """Indices of the occupied cells, ascending."""
        return self.archive.elite_indices()

    @property
    def cells(self) -> np.ndarray:
        """``[n]`` int64 indices of the occupied cells, ascending (the rows of every accessor)."""
        return self.elite_indices().astype(np.int64)

    @property
    def fitness(self) -> np.ndarray:
        """``[n]`` fitness of the elites, in the order of :attr:`cells`."""
        return np.asarray(self.archive.fitness)[self.cells]

    @property
    def descriptors(self) -> np.ndarray:
        """``[n, k]`` descriptors of the elites, in the order of :attr:`cells`."""
        return np.asarray(self.archive.descriptors)[self.cells]

    def top_indices(self, n: int) -> np.ndarray:
        """Cell indices of the ``n`` best elites, best first."""
        cells = self.elite_indices()
        fitness = np.asarray(self.archive.fitness)[cells]
        return cells[np.argsort(-fitness, kind="stable")[:n]]

    def genomes(self, cells: Any) -> Any:
        """The genomes stored at ``cells`` as a population."""
        idx = jnp.asarray(cells)
        return jax.tree_util.tree_map(lambda x: x[idx], self.archive.genomes)

    def data(
        self, return_type: Literal["dict", "pandas"] = "dict"
    ) -> dict[str, np.ndarray] | pandas.DataFrame:
        """Every elite as one row of a table, in ascending cell order.

        Args:
            return_type: ``"dict"`` for a dict of numpy arrays, ``"pandas"`` for a
                ``pandas.DataFrame`` (needs pandas: ``pip install pandas``).

        Returns:
            With ``"dict"``: ``cell`` ``[n]`` (int64), ``fitness`` ``[n]``, ``descriptors``
            ``[n, k]``, ``threshold`` ``[n]`` (the CMA-MAE acceptance threshold; the fitness
            for MAP-Elites), ``solution`` ``[n, d]`` (each genome flattened in the leaf order
            of ``jax.flatten_util.ravel_pytree``) and one ``[n, ...]`` array per per-elite
            extra, under the extra's name. With ``"pandas"``: one row per elite with the
            columns ``cell``, ``fitness``, one column per descriptor named by the task's
            descriptor names, ``threshold``, ``solution_0`` .. ``solution_{d-1}``, and per
            extra one column (a scalar per elite) or ``<name>_0`` .. (flattened).

        Raises:
            ConfigError: an unknown ``return_type``, or an extra whose name is taken.
            MissingDependencyError: ``"pandas"`` without pandas installed (an ``ImportError``;
                ``pip install pandas``).
        """
        if return_type not in DATA_RETURN_TYPES:
            raise ConfigError(
                f"return_type must be one of {list(DATA_RETURN_TYPES)}, got {return_type!r}; "
                "use 'dict' for numpy arrays or 'pandas' for a DataFrame"
            )
        if return_type == "pandas":
            try:
                import pandas
            except ImportError as err:
                raise MissingDependencyError(
                    "ArchiveArtifact.data('pandas') needs pandas, which is not installed; "
                    "install it with `pip install pandas` (or `pip install qdzoo[pandas]`), or "
                    "call data('dict') for numpy arrays"
                ) from err
        cells = self.cells
        n = cells.shape[0]
        a = self.archive
        leaves = jax.tree_util.tree_leaves(a.genomes)
        widths = [math.prod(np.shape(x)[1:]) for x in leaves]
        solution = (
            np.concatenate(
                [np.asarray(x)[cells].reshape(n, w) for x, w in zip(leaves, widths, strict=True)],
                axis=1,
            )
            if leaves
            else np.zeros((n, 0), np.float32)
        )
        table: dict[str, np.ndarray] = {
            "cell": cells,
            "fitness": np.asarray(a.fitness)[cells],
            "descriptors": np.asarray(a.descriptors)[cells],
            "threshold": np.asarray(a.thresholds)[cells],
            "solution": solution,
        }
        for name, values in a.extras.items():
            if name in table:
                raise ConfigError(
                    f"the per-elite extra {name!r} has the name of a column of data(); "
                    f"extras must not be named {sorted(table)}"
                )
            table[name] = np.asarray(values)[cells]
        if return_type == "dict":
            return table
        return _data_frame(pandas, table, self.task_spec.descriptor_names)

    def __repr__(self) -> str:
        m = self.metrics()
        return (
            f"ArchiveArtifact(task={self.config['task']['name']!r}, "
            f"algorithm={self.config.get('algorithm', {}).get('name')!r}, "
            f"elites={int(m['num_elites'])}/{self.archive.num_cells}, "
            f"qd_score={m['qd_score']:.4g})"
        )

    # ----------------------------------------------------------------- saving
    def save_pretrained(
        self,
        path: str | Path,
        *,
        genome_dtype: str = "float32",
        plot: bool = True,
        gif: bool = False,
    ) -> Path:
        """Write the artifact directory (config, weights, card, heatmap) atomically.

        Args:
            path: target directory (created if needed; other files in it are kept).
            genome_dtype: ``float32`` or ``float16`` (halves the size; fitness, descriptors
                and thresholds stay float32).
            plot: also write ``heatmap.png`` (shown on the model card).
            gif: also write ``tour.gif``, a video of the best elite and elites spread over
                the archive (:func:`zoo.video.write_card_gif`; rolls them out, so it takes
                seconds to minutes); skipped for tasks without a scene. The card shows the
                GIF whenever ``path`` holds one.

        The behaviour labels (``labels.json``, :mod:`zoo.labels`) of the directory this
        artifact was loaded from come along when saving elsewhere (and so when pushing),
        unless ``path`` already holds some.

        Raises:
            ConfigError: another ``genome_dtype``.
        """
        if genome_dtype not in ("float32", "float16"):
            raise ConfigError(f"genome_dtype must be 'float32' or 'float16', got {genome_dtype!r}")
        if self.path is not None and self.path.resolve() != Path(path).resolve():
            source, target = self.path / LABELS_NAME, Path(path) / LABELS_NAME
            if source.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        if gif:
            from zoo.video import write_card_gif

            write_card_gif(self, Path(path) / TOUR_NAME)
        return super().save_pretrained(path, genome_dtype=genome_dtype, plot=plot)

    def _prepare_config(
        self, config: dict[str, Any], *, genome_dtype: str = "float32", **options: Any
    ) -> None:
        if genome_dtype not in ("float32", "float16"):
            raise ConfigError(f"genome_dtype must be 'float32' or 'float16', got {genome_dtype!r}")
        config["genome_dtype"] = genome_dtype
        config["metrics"] = {k: finite_or_none(v) for k, v in self.metrics().items()}

    def _weight_arrays(
        self, config: dict[str, Any], *, genome_dtype: str = "float32", **options: Any
    ) -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
        return {WEIGHTS_NAME: (self._arrays(genome_dtype), {"format": "qdzoo-archive"})}

    def _write_extra_files(
        self, tmp: Path, target: Path, config: dict[str, Any], *, plot: bool = True, **options: Any
    ) -> list[str]:
        if not plot:
            return []
        from zoo.plot import plot_archive

        plot_archive(self, tmp / HEATMAP_NAME)
        return [HEATMAP_NAME]

    def _render_card(
        self, config: dict[str, Any], target: Path, *, plot: bool = True, **options: Any
    ) -> str:
        from hub_cards import render_archive_card

        return render_archive_card(
            config,
            has_heatmap=plot,
            has_tour=(target / TOUR_NAME).is_file(),
            label_examples=label_examples(target / LABELS_NAME),
        )

    def _arrays(self, genome_dtype: str) -> dict[str, np.ndarray]:
        cells = self.elite_indices()
        a = self.archive
        arrays: dict[str, np.ndarray] = {
            "cells": cells.astype(np.int64),
            "fitness": np.asarray(a.fitness)[cells],
            "descriptors": np.asarray(a.descriptors)[cells],
            "thresholds": np.asarray(a.thresholds)[cells],
        }
        if a.tessellation == "cvt":
            arrays["centroids"] = np.asarray(a.centroids)
        genomes = tree_to_arrays(a.genomes, prefix="genomes.")
        for k, v in genomes.items():
            arrays[k] = v[cells].astype(genome_dtype)
        for k, v in tree_to_arrays(a.extras, prefix="extras.").items():
            arrays[k] = v[cells]
        return arrays

    # ----------------------------------------------------------------- loading
    @classmethod
    def _required_weight_files(cls, config: dict[str, Any]) -> tuple[str, ...]:
        return (WEIGHTS_NAME,)

    @classmethod
    def _check_contents(cls, config: dict[str, Any], path: Path, version: int) -> None:
        check_archive_config(config, f"{path}/config.json")

    @classmethod
    def _from_checked_directory(cls, path: Path, config: dict[str, Any]) -> ArchiveArtifact:
        arrays = load_arrays(path / WEIGHTS_NAME)
        return cls(build_archive(config, arrays, path), config)


def check_archive_config(config: dict[str, Any], where: str) -> None:
    """What the schema cannot say: sizes that must agree, the policy of a policy genome.

    Raises:
        ArtifactError: a mismatch, named with its key paths.
    """
    spec, archive = config["task"]["spec"], config["archive"]
    k = len(spec["descriptor_names"])
    sizes = {
        "task.spec.descriptor_low": len(spec["descriptor_low"]),
        "task.spec.descriptor_high": len(spec["descriptor_high"]),
        "archive.low": len(archive["low"]),
        "archive.high": len(archive["high"]),
    }
    if "descriptor_names" in archive:
        sizes["archive.descriptor_names"] = len(archive["descriptor_names"])
    wrong = {key: n for key, n in sizes.items() if n != k}
    if k == 0 or wrong:
        raise ArtifactError(
            f"{where}: every descriptor list must have one entry per descriptor "
            f"(task.spec.descriptor_names has {k}), got {wrong or 'none'}; {FIX_LOADED}"
        )
    if archive["tessellation"] == "grid":
        shape = archive.get("grid_shape")
        if not shape or len(shape) != k or math.prod(shape) != archive["num_cells"]:
            raise ArtifactError(
                f"{where}: a grid archive needs archive.grid_shape, {k} positive integers whose "
                f"product is archive.num_cells ({archive['num_cells']}), got {shape}; "
                f"{FIX_LOADED}"
            )
    evaluation = config.get("evaluation") or {}
    if evaluation.get("protocol") == "robust" and "episodes" not in evaluation:
        raise ArtifactError(
            f"{where}: evaluation.protocol is 'robust', so evaluation.episodes (episodes per "
            f"elite, a positive integer) must be given; {FIX_LOADED}"
        )
    if spec["genome"] == "policy" and config["policy"] is None:
        raise ArtifactError(
            f"{where}: task.spec.genome is 'policy', so 'policy' must describe the MLP "
            f"(observation_size, action_size, ...), got null; {FIX_LOADED}"
        )
    if spec["genome"] == "vector" and not isinstance(spec.get("genome_size"), int):
        raise ArtifactError(
            f"{where}: task.spec.genome is 'vector', so task.spec.genome_size must be a "
            f"positive integer, got {spec.get('genome_size')!r}; {FIX_LOADED}"
        )
    try:
        task_spec = TaskSpec(**spec)
        policy = None if config["policy"] is None else PolicySpec.from_dict(config["policy"])
    except (TypeError, ValueError) as err:
        raise ArtifactError(
            f"{where}: task.spec or policy describes nothing this qdzoo can build ({err}); "
            f"{FIX_LOADED}"
        ) from err
    del task_spec, policy


def _data_frame(
    pandas: Any, table: dict[str, np.ndarray], descriptor_names: tuple[str, ...]
) -> pandas.DataFrame:
    """The DataFrame of :meth:`ArchiveArtifact.data` from its dict of arrays."""
    columns: dict[str, np.ndarray] = {
        "cell": table["cell"],
        "fitness": table["fitness"],
    }
    for i, name in enumerate(descriptor_names):
        columns[name] = table["descriptors"][:, i]
    columns["threshold"] = table["threshold"]
    blocks = [pandas.DataFrame(columns)]
    n = table["cell"].shape[0]
    wide = [("solution", table["solution"])]
    wide += [
        (k, v)
        for k, v in table.items()
        if k not in ("cell", "fitness", "descriptors", "threshold", "solution")
    ]
    for name, values in wide:
        if values.ndim == 1:
            blocks.append(pandas.DataFrame({name: values}))
            continue
        flat = values.reshape(n, -1)
        blocks.append(pandas.DataFrame(flat, columns=[f"{name}_{i}" for i in range(flat.shape[1])]))
    frame = pandas.concat(blocks, axis=1)
    taken = frame.columns[frame.columns.duplicated()].tolist()
    if taken:
        raise ConfigError(
            f"the columns {taken} appear twice in the DataFrame (a descriptor or extra named "
            "like another column); read the arrays with data('dict') instead"
        )
    return frame


def build_archive(config: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Archive:
    """Rebuild the full archive pytree from the stored occupied cells."""
    spec = config["archive"]
    task_spec = ArchiveArtifact(None, config).task_spec  # type: ignore[arg-type]
    policy = None if config.get("policy") is None else PolicySpec.from_dict(config["policy"])
    template = genome_template(task_spec, policy)
    where = f"{path}/{WEIGHTS_NAME}"
    unknown = sorted(
        k
        for k in arrays
        if k not in STORED_ARRAYS and not (k == "genomes" or k.startswith(("genomes.", "extras.")))
    )
    if unknown:
        raise ArtifactError(
            f"{where} holds arrays an archive does not have: {unknown}; expected only "
            f"{list(STORED_ARRAYS[:4])}, 'centroids' (CVT), 'genomes.*' and 'extras.*'. The "
            "file was written by another program or edited: save or download it again"
        )
    if "cells" not in arrays:
        raise ArtifactError(f"{where} has no 'cells' array; save or download the archive again")
    raw_cells = arrays["cells"]
    if not np.issubdtype(raw_cells.dtype, np.integer):
        raise ArtifactError(
            f"{where}: 'cells' must hold integer cell indices (int64), got dtype "
            f"{raw_cells.dtype}; save or download the archive again"
        )
    cells = raw_cells.astype(np.int64)
    n = cells.shape[0] if cells.ndim else 0
    num_cells = int(spec["num_cells"])
    if cells.ndim != 1 or (n and (cells.min() < 0 or cells.max() >= num_cells)):
        raise ShapeError(
            f"{where}: 'cells' must be a vector of indices in [0, {num_cells}) (archive."
            f"num_cells), got shape {cells.shape}"
            + (f" with values in [{cells.min()}, {cells.max()}]" if cells.size else "")
            + "; save or download the archive again"
        )
    unique, counts = np.unique(cells, return_counts=True)
    if unique.size != n:
        raise ArtifactError(
            f"{where}: the cells {unique[counts > 1][:10].tolist()} appear more than once; each "
            f"occupied cell holds one elite ({n} rows, {unique.size} distinct cells). Save or "
            "download the archive again"
        )
    extras_template = {
        k[len("extras.") :]: jnp.zeros(v.shape[1:], v.dtype)
        for k, v in arrays.items()
        if k.startswith("extras.")
    }
    archive = empty_archive(spec, template, arrays.get("centroids"), extras_template or None)
    if archive.num_cells != num_cells:
        raise ShapeError(
            f"{path}: config says {num_cells} cells, the tessellation has {archive.num_cells}"
        )
    # Stored rows (occupied cells only) -> full [num_cells, ...] arrays.
    genome_rows = {k: v.astype(np.float32) for k, v in arrays.items() if k.startswith("genomes")}
    stored = arrays_to_tree(
        jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((n, *x.shape[1:]), x.dtype), archive.genomes
        ),
        genome_rows,
        prefix="genomes.",
    )
    k_desc = archive.descriptor_size
    for name, shape in (("fitness", (n,)), ("thresholds", (n,)), ("descriptors", (n, k_desc))):
        if name not in arrays or arrays[name].shape != shape:
            got = arrays[name].shape if name in arrays else "nothing"
            raise ShapeError(f"{path}: {name} should have shape {shape}, got {got}")
    _check_finite(arrays, cells, where)
    expected_cells = np.asarray(archive.cell_index(jnp.asarray(arrays["descriptors"])))
    moved = np.flatnonzero(expected_cells != cells)
    if n and moved.size:
        raise ArtifactError(
            f"{where}: {moved.size} of {n} elites are stored in another cell than their "
            f"descriptors fall into with the config's tessellation (rows {moved[:10].tolist()}; "
            f"e.g. row {moved[0]} is in cell {cells[moved[0]]}, its descriptors in cell "
            f"{expected_cells[moved[0]]}). archive.grid_shape, low/high or the centroids "
            "do not match the stored cells: save or download the archive again"
        )
    return archive.with_elites(
        cells,
        stored,
        arrays["fitness"],
        arrays["descriptors"],
        arrays["thresholds"],
        {k: arrays[f"extras.{k}"] for k in archive.extras},
    )


def _check_finite(arrays: dict[str, np.ndarray], cells: np.ndarray, where: str) -> None:
    """Refuse NaN or infinite values in the stored rows (elites are finite by construction).

    Raises:
        NonFiniteError: names the array, the rows and their cells.
    """
    for name in sorted(arrays):
        if name not in ("fitness", "descriptors", "thresholds") and not name.startswith("genomes"):
            continue
        values = arrays[name]
        if not np.issubdtype(values.dtype, np.floating):
            continue
        bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise NonFiniteError(
                f"{where}: {name!r} holds NaN or infinite values in {rows.size} row(s) "
                f"{rows[:10].tolist()} (cells {cells[rows[:10]].tolist()}); an archive stores "
                "only finite elites. The file is corrupted: save or download it again"
            )


def load_archive(
    name_or_path: str | Path, *, revision: str | None = None, token: str | None = None
) -> ArchiveArtifact:
    """Load an archive from a local directory, a catalog name or a Hub repo id."""
    return ArchiveArtifact.from_pretrained(name_or_path, revision=revision, token=token)
