"""A trained archive as a shareable artifact: ``config.json`` + ``archive.safetensors`` + card.

The directory layout and every config key are documented in ``docs/FORMAT.md``. Only the
occupied cells are stored. Loading checks the format version, the sha256 of every weight
file and every array's shape against the config before anything is built.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from models.policy import PolicySpec
from zoo import tasks
from zoo.archive import Archive
from zoo.errors import ArtifactError, ConfigError, ShapeError
from zoo.serialization import (
    arrays_to_tree,
    check_artifact_header,
    load_arrays,
    read_json,
    save_arrays,
    sha256_file,
    tree_to_arrays,
    verify_sha256,
    write_json,
)
from zoo.tasks.base import Task, TaskSpec, genome_template

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "archive.safetensors"
CARD_NAME = "README.md"
HEATMAP_NAME = "heatmap.png"
ARTIFACT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, HEATMAP_NAME, "metrics.jsonl")
"""The files of an artifact directory that are published (a run's checkpoint/ is not)."""


def finite_or_none(x: float) -> float | None:
    """JSON has no inf/nan: store them as null."""
    x = float(x)
    return x if math.isfinite(x) else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers of an artifact."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("qdzoo", "jax", "equinox", "brax", "optax", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


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


class ArchiveArtifact:
    """An :class:`Archive` plus the config that says how it was made and how to re-evaluate it.

    Build one with :func:`load_archive` (or :meth:`from_pretrained`), or from training.
    ``artifact.archive`` is the pytree; ``artifact.config`` the JSON-able dict.
    """

    def __init__(self, archive: Archive, config: dict[str, Any]) -> None:
        self.archive = archive
        self.config = config

    # ----------------------------------------------------------------- accessors
    @property
    def task_spec(self) -> TaskSpec:
        t = self.config["task"]["spec"]
        for k in ("descriptor_names", "descriptor_low", "descriptor_high"):
            t = {**t, k: tuple(t[k])}
        return TaskSpec(**t)

    @property
    def policy_spec(self) -> PolicySpec | None:
        p = self.config.get("policy")
        return None if p is None else PolicySpec.from_dict(p)

    def make_task(self) -> Task:
        """Rebuild the task with the recorded constructor arguments."""
        return tasks.make(self.config["task"]["name"], **self.config["task"]["kwargs"])

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.archive.metrics().items()}

    def elite_indices(self) -> np.ndarray:
        return self.archive.elite_indices()

    def top_indices(self, n: int) -> np.ndarray:
        """Cell indices of the ``n`` best elites, best first."""
        cells = self.elite_indices()
        fitness = np.asarray(self.archive.fitness)[cells]
        return cells[np.argsort(-fitness, kind="stable")[:n]]

    def genomes(self, cells: Any) -> Any:
        """The genomes stored at ``cells`` as a population."""
        idx = jnp.asarray(cells)
        return jax.tree_util.tree_map(lambda x: x[idx], self.archive.genomes)

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
        self, path: str | Path, *, genome_dtype: str = "float32", plot: bool = True
    ) -> Path:
        """Write the artifact directory (config, weights, card, heatmap) atomically.

        Args:
            path: target directory (created if needed; other files in it are kept).
            genome_dtype: ``float32`` or ``float16`` (halves the size; fitness, descriptors
                and thresholds stay float32).
            plot: also write ``heatmap.png`` (shown on the model card).
        """
        if genome_dtype not in ("float32", "float16"):
            raise ConfigError(f"genome_dtype must be 'float32' or 'float16', got {genome_dtype!r}")
        path = Path(path)
        config = dict(self.config)
        config["format_version"] = FORMAT_VERSION
        config["artifact"] = "archive"
        config["genome_dtype"] = genome_dtype
        config["metrics"] = {k: finite_or_none(v) for k, v in self.metrics().items()}
        config.setdefault("library_versions", library_versions())
        path.mkdir(parents=True, exist_ok=True)
        # Every file is written to a temporary directory first, then moved into place one by
        # one with config.json last: a reader never sees a config whose checksums do not match
        # the files beside it, and unrelated files in ``path`` (a training checkpoint) stay.
        with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-save-") as tmp_name:
            tmp = Path(tmp_name)
            save_arrays(
                tmp / WEIGHTS_NAME, self._arrays(genome_dtype), metadata={"format": "qdzoo-archive"}
            )
            config["files"] = {
                WEIGHTS_NAME: {
                    "sha256": sha256_file(tmp / WEIGHTS_NAME),
                    "bytes": (tmp / WEIGHTS_NAME).stat().st_size,
                }
            }
            names = [WEIGHTS_NAME, CARD_NAME]
            if plot:
                from zoo.plot import plot_archive

                plot_archive(self, tmp / HEATMAP_NAME)
                names.append(HEATMAP_NAME)
            from hub_cards import render_archive_card

            (tmp / CARD_NAME).write_text(render_archive_card(config, has_heatmap=plot))
            write_json(tmp / CONFIG_NAME, config)
            for name in [*names, CONFIG_NAME]:
                os.replace(tmp / name, path / name)
        self.config = config
        return path

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

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        commit_message: str | None = None,
        genome_dtype: str = "float32",
    ) -> str:
        """Save to a temporary directory and upload it as one commit; returns the commit sha."""
        from zoo.hub import push_directory

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "artifact", genome_dtype=genome_dtype)
            return push_directory(
                Path(tmp) / "artifact",
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message or f"Upload {self.config['task']['name']} archive",
            )

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_directory(cls, path: str | Path) -> ArchiveArtifact:
        """Load and check an artifact directory (see docs/FORMAT.md)."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"{path} is not a directory; expected an archive artifact")
        config = read_json(path / CONFIG_NAME)
        check_config(config, path)
        verify_sha256(path / WEIGHTS_NAME, config["files"][WEIGHTS_NAME]["sha256"])
        arrays = load_arrays(path / WEIGHTS_NAME)
        return cls(build_archive(config, arrays, path), config)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, revision: str | None = None, token: str | None = None
    ) -> ArchiveArtifact:
        """Load from a catalog name, a local directory or a Hub repo id (in that order).

        A catalog name (``zoo.list_models()``) loads the copy bundled in the package when
        there is one and no ``revision`` is asked for (no network), else the entry's Hub repo.
        Write a local directory that shares a catalog name as ``./name``.

        Raises:
            UnknownModelError: a name without ``/`` that is neither a catalog name nor a
                directory (the message lists the catalog names).
            HubError: the repo could not be fetched (see :mod:`zoo.hub`).
        """
        from zoo.catalog import resolve_artifact

        return cls.from_directory(resolve_artifact(name_or_path, "archive", revision, token))


def check_config(config: Any, path: Path) -> None:
    """Raise a clear error if ``config`` is not a qdzoo archive config this version can read."""
    check_artifact_header(
        config, path, "archive", FORMAT_VERSION,
        "ArchiveArtifact.save_pretrained or `qdzoo train`",
    )  # fmt: skip
    for key in ("task", "archive", "files"):
        if key not in config:
            raise ArtifactError(f"{path}/config.json lacks the {key!r} section")
    if WEIGHTS_NAME not in config["files"]:
        raise ArtifactError(f"{path}/config.json records no checksum for {WEIGHTS_NAME}")


def build_archive(config: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Archive:
    """Rebuild the full archive pytree from the stored occupied cells."""
    spec = config["archive"]
    task_spec = ArchiveArtifact(None, config).task_spec  # type: ignore[arg-type]
    policy = None if config.get("policy") is None else PolicySpec.from_dict(config["policy"])
    template = genome_template(task_spec, policy)
    try:
        cells = arrays["cells"].astype(np.int64)
    except KeyError as err:
        raise ArtifactError(f"{path}/{WEIGHTS_NAME} has no 'cells' array") from err
    n = cells.shape[0]
    num_cells = int(spec["num_cells"])
    if cells.ndim != 1 or (n and (cells.min() < 0 or cells.max() >= num_cells)):
        raise ShapeError(f"{path}: cell indices must be a vector in [0, {num_cells})")
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
    idx = jnp.asarray(cells)
    genomes = jax.tree_util.tree_map(
        lambda full, rows: full.at[idx].set(rows), archive.genomes, stored
    )
    extras = {
        k: archive.extras[k].at[idx].set(jnp.asarray(arrays[f"extras.{k}"])) for k in archive.extras
    }
    return eqx.tree_at(
        lambda a: (a.genomes, a.fitness, a.descriptors, a.thresholds, a.occupied, a.extras),
        archive,
        (
            genomes,
            archive.fitness.at[idx].set(jnp.asarray(arrays["fitness"])),
            archive.descriptors.at[idx].set(jnp.asarray(arrays["descriptors"])),
            archive.thresholds.at[idx].set(jnp.asarray(arrays["thresholds"])),
            archive.occupied.at[idx].set(True),
            extras,
        ),
    )


def load_archive(
    name_or_path: str | Path, *, revision: str | None = None, token: str | None = None
) -> ArchiveArtifact:
    """Load an archive from a local directory, a catalog name or a Hub repo id."""
    return ArchiveArtifact.from_pretrained(name_or_path, revision=revision, token=token)
