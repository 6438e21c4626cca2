"""The artifact base: one directory format, saved, loaded, checked and pushed the same way.

Every qdzoo artifact is a directory ``config.json`` + ``*.safetensors`` (maybe in
sub-folders) + ``README.md`` (the model card). :class:`Artifact` owns what every kind shares:

- **saving** (:meth:`Artifact.save_pretrained`): every file is written to a temporary
  directory inside the target first, then moved into place with ``config.json`` last, so a
  reader never sees a config whose checksums do not match the files beside it; unrelated
  files in the target (a training ``checkpoint/``) are kept. The sha256 and size of every
  weight file are recorded under ``config["files"]``; ``format_version``, ``artifact`` (the
  kind) and ``library_versions`` are set.
- **loading** (:meth:`Artifact.from_directory`, :meth:`Artifact.from_pretrained`): the kind
  and format version are checked, then every recorded checksum, before anything is built.
  ``from_pretrained`` takes a catalog name, a local directory or a Hub repo id
  (:func:`zoo.catalog.resolve_artifact`).
- **publishing** (:meth:`Artifact.push_to_hub`, :meth:`Artifact.push_saved`): the repo id
  is checked, then the directory is uploaded as one commit through
  :func:`zoo.hub.push_directory`.

A subclass (:class:`~zoo.archive_artifact.ArchiveArtifact`,
:class:`~zoo.generator.Generator`) says only what differs: its kind and format version
(class attributes), its weight files (:meth:`Artifact._weight_arrays`), any other files
(:meth:`Artifact._write_extra_files`), its card (:meth:`Artifact._render_card`), its own
config checks (:meth:`Artifact._check_contents`) and how to build itself from a checked
directory (:meth:`Artifact._from_checked_directory`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from zoo import tasks
from zoo.errors import ArtifactError, ConfigError
from zoo.serialization import (
    FIX_LOADED,
    Field,
    check_artifact_header,
    check_fields,
    finalise_tree,
    fsync_directory,
    read_json,
    save_arrays,
    sha256_file,
    verify_sha256,
    write_json,
    write_text,
)
from zoo.tasks.base import Task

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "POLICY_FIELDS",
    "TASK_FIELDS",
    "Artifact",
    "finite_or_none",
    "library_versions",
]

CONFIG_NAME = "config.json"
"""The config file at the root of every artifact directory."""
CARD_NAME = "README.md"
"""The model card at the root of every artifact directory."""
KIND_LOADERS = {"archive": "zoo.load_archive", "generator": "zoo.load_generator"}
"""The loader of each artifact kind (named in the error for a directory of another kind)."""

ArtifactT = TypeVar("ArtifactT", bound="Artifact")

_SIZE = ("positive int", True, True)  # kind, nullable, optional
TASK_FIELDS: tuple[Field, ...] = (
    Field("task", "dict"),
    Field("task.name", "str"),
    Field("task.kwargs", "dict"),
    Field("task.spec", "dict"),
    Field("task.spec.name", "str"),
    Field("task.spec.kwargs", "dict"),
    Field("task.spec.genome", "str", choices=("policy", "vector")),
    Field("task.spec.descriptor_names", "list[str]"),
    Field("task.spec.descriptor_low", "list[number]"),
    Field("task.spec.descriptor_high", "list[number]"),
    Field("task.spec.episode_length", "positive int"),
    Field("task.spec.qd_offset", "finite number"),
    Field("task.spec.reset", "str", choices=("deterministic", "stochastic")),
    Field("task.spec.genome_size", *_SIZE),
    Field("task.spec.observation_size", *_SIZE),
    Field("task.spec.action_size", *_SIZE),
    Field("task.spec.min_fitness", "number", nullable=True, optional=True),
    Field("task.spec.max_fitness", "number", nullable=True, optional=True),
)
"""The ``task`` section of every artifact config (``docs/FORMAT.md``)."""

POLICY_FIELDS: tuple[Field, ...] = (
    Field("policy", "dict", nullable=True),
    Field("policy.observation_size", "positive int"),
    Field("policy.action_size", "positive int"),
    Field("policy.hidden_sizes", "list[positive int]", optional=True),
    Field("policy.activation", "str", optional=True),
    Field("policy.output_activation", "str", optional=True),
    Field("policy.normalise_observations", "bool", optional=True),
)
"""The ``policy`` section (``null`` for vector genomes)."""

_FIX_SAVED = "fix the artifact's config before saving it"


def _check_file_record(name: str, record: Any, where: str) -> None:
    """Refuse a ``files`` entry without a well-formed sha256 (and integer size)."""
    key = f"files[{name!r}]"
    parts = name.split("/") if isinstance(name, str) else [""]
    if any(part in ("", ".", "..") for part in parts) or "\\" in name:
        raise ArtifactError(
            f"{where}: {key} is not a relative file name inside the artifact (no '..', no "
            f"leading '/'); {FIX_LOADED}"
        )
    if not isinstance(record, dict):
        raise ArtifactError(
            f"{where}: {key} must be an object with 'sha256' and 'bytes', got "
            f"{record!r:.80}; {FIX_LOADED}"
        )
    check_fields(
        record,
        (Field("sha256", "sha256"), Field("bytes", "int", optional=True)),
        f"{where} {key}",
    )


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


class Artifact:
    """Base of the artifacts: a config dict plus arrays, stored as a directory.

    Attributes:
        config: the JSON-able config (see ``docs/FORMAT.md``).
        path: the directory this artifact was loaded from or last saved to (``None`` for a
            fresh one).
    """

    kind: ClassVar[str]
    """The ``artifact`` value of ``config.json`` (``"archive"`` or ``"generator"``)."""
    format_version: ClassVar[int]
    """The newest format version this qdzoo writes and reads for this kind."""
    written_by: ClassVar[str]
    """What writes such a directory (named in the error for a directory of another kind)."""
    description: ClassVar[str]
    """What the artifact is, in the default commit message (``Upload <task> <description>``)."""
    published_files: ClassVar[tuple[str, ...]]
    """The files of a directory that are published (a run's ``checkpoint/`` is not)."""
    config_fields: ClassVar[tuple[Field, ...]] = ()
    """The schema of ``config.json`` (besides ``files``), checked on save and on load."""

    config: dict[str, Any]
    path: Path | None

    # ------------------------------------------------------------------- subclass hooks
    def _prepare_config(self, config: dict[str, Any], **options: Any) -> None:
        """Add the entries of this kind to the config about to be saved (in place)."""

    def _weight_arrays(
        self, config: dict[str, Any], **options: Any
    ) -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
        """``{relative file name: (arrays, safetensors metadata)}`` of the weight files."""
        raise NotImplementedError

    def _write_extra_files(
        self, tmp: Path, target: Path, config: dict[str, Any], **options: Any
    ) -> list[str]:
        """Write the files other than weights, card and config into ``tmp``; return their
        names relative to it (moved into ``target`` before the card and the config)."""
        return []

    def _render_card(self, config: dict[str, Any], target: Path, **options: Any) -> str:
        """The model card (``README.md``) of the config about to be saved into ``target``."""
        raise NotImplementedError

    @classmethod
    def _required_weight_files(cls, config: dict[str, Any]) -> Sequence[str]:
        """Weight files whose checksums ``config["files"]`` must record."""
        raise NotImplementedError

    @classmethod
    def _check_contents(cls, config: dict[str, Any], path: Path, version: int) -> None:
        """Kind-specific checks of a config whose header (kind, version) is valid."""

    @classmethod
    def _from_checked_directory(
        cls: type[ArtifactT], path: Path, config: dict[str, Any]
    ) -> ArtifactT:
        """Build the artifact from a directory whose config and checksums were checked."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ accessors
    def make_task(self) -> Task:
        """Rebuild the task with the recorded constructor arguments."""
        return tasks.make(self.config["task"]["name"], **self.config["task"]["kwargs"])

    # --------------------------------------------------------------------------- saving
    def save_pretrained(self, path: str | Path, **options: Any) -> Path:
        """Write the artifact directory atomically and return its path.

        Files are written to a temporary directory inside ``path`` and moved into place with
        ``config.json`` last; other files in ``path`` are kept. ``options`` are those of the
        subclass (e.g. ``genome_dtype`` of an archive).
        """
        path = Path(path)
        config = dict(self.config)
        config["format_version"] = self.format_version
        config["artifact"] = self.kind
        self._prepare_config(config, **options)
        config.setdefault("library_versions", library_versions())
        check_fields(
            config, self.config_fields, f"the {self.kind} config", fix=_FIX_SAVED, error=ConfigError
        )
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path, prefix=".tmp-save-") as tmp_name:
            tmp = Path(tmp_name)
            files: dict[str, dict[str, Any]] = {}
            for name, (arrays, metadata) in self._weight_arrays(config, **options).items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                save_arrays(tmp / name, arrays, metadata=metadata)
                files[name] = {
                    "sha256": sha256_file(tmp / name),
                    "bytes": (tmp / name).stat().st_size,
                }
            config["files"] = files
            names = [*files, *self._write_extra_files(tmp, path, config, **options)]
            write_text(tmp / CARD_NAME, self._render_card(config, path, **options))
            write_json(tmp / CONFIG_NAME, config)
            finalise_tree(tmp)  # modes from the umask, contents on disk before any rename
            folders = {path}
            for name in [*names, CARD_NAME, CONFIG_NAME]:
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                if name == CONFIG_NAME:  # every other file is in place (and on disk) first
                    for folder in folders:
                        fsync_directory(folder)
                os.replace(tmp / name, path / name)
                folders.add((path / name).parent)
            fsync_directory(path)
        self.config = config
        self.path = path
        return path

    # -------------------------------------------------------------------------- loading
    @classmethod
    def check_config(cls, config: Any, path: Path) -> None:
        """Raise a clear error unless ``config`` is a config of this kind this qdzoo reads.

        Raises:
            ArtifactError: another kind, no format version, missing sections or checksums.
            FormatVersionError: a format version this qdzoo cannot read.
        """
        other = config.get("artifact") if isinstance(config, dict) else None
        hint = ""
        if other in KIND_LOADERS and other != cls.kind:
            hint = f" (load {other}s with {KIND_LOADERS[other]})"
        version = check_artifact_header(
            config, path, cls.kind, cls.format_version, cls.written_by, hint
        )
        where = f"{path}/config.json"
        check_fields(config, cls.config_fields, where)
        cls._check_contents(config, path, version)
        files = config.get("files")
        if not isinstance(files, dict):
            raise ArtifactError(
                f"{where} lacks the 'files' section (expected an object of sha256 and bytes "
                f"per weight file); {FIX_LOADED}"
            )
        for name in cls._required_weight_files(config):
            if name not in files:
                raise ArtifactError(
                    f"{where} records no checksum for {name} (expected files[{name!r}] with "
                    f"'sha256' and 'bytes'); {FIX_LOADED}"
                )
        for name, record in files.items():
            _check_file_record(name, record, where)

    @classmethod
    def verify_files(cls, config: dict[str, Any], path: Path) -> None:
        """Check the sha256 of every file recorded under ``config["files"]``.

        Raises:
            ArtifactError: a recorded file is missing.
            ChecksumError: a file's sha256 differs from the recorded one.
        """
        for name, record in config["files"].items():
            if not (path / name).is_file():
                raise ArtifactError(
                    f"{path / name} is missing (config.json records it); the directory is "
                    "incomplete: download or save it again"
                )
            verify_sha256(path / name, record["sha256"])

    @classmethod
    def from_directory(cls: type[ArtifactT], path: str | Path) -> ArtifactT:
        """Load and check an artifact directory (kind, format version, checksums, shapes)."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"{path} is not a directory; expected a {cls.kind} artifact")
        config = read_json(path / CONFIG_NAME)
        cls.check_config(config, path)
        cls.verify_files(config, path)
        artifact = cls._from_checked_directory(path, config)
        artifact.path = path
        return artifact

    @classmethod
    def from_pretrained(
        cls: type[ArtifactT],
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        token: str | None = None,
    ) -> ArtifactT:
        """Load from a catalog name, a local directory or a Hub repo id (in that order).

        A catalog name (``zoo.list_models()``) loads the copy bundled in the package when
        there is one and no ``revision`` is asked for (no network), else the entry's Hub repo.
        Write a local directory that shares a catalog name as ``./name``.

        Raises:
            UnknownModelError: a name without ``/`` that is neither a catalog name nor a
                directory (the message lists the catalog names).
            ArtifactError: the catalog entry is of another kind, or the directory is not a
                valid artifact of this kind (kind, format version, checksums, shapes).
            HubError: the repo could not be fetched (see :mod:`zoo.hub`).
        """
        from zoo.catalog import resolve_artifact

        return cls.from_directory(resolve_artifact(name_or_path, cls.kind, revision, token))

    # --------------------------------------------------------------------------- pushing
    def default_commit_message(self) -> str:
        """``Upload <task name> <description>``."""
        return f"Upload {self.config['task']['name']} {self.description}"

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        commit_message: str | None = None,
        **options: Any,
    ) -> str:
        """Save to a temporary directory and upload it as one commit; returns the commit sha.

        Args:
            repo_id: ``"namespace/name"``.
            private: create the repo as private (an existing repo keeps its visibility).
            token: a token with write access (default: ``HF_TOKEN`` or the saved one).
            commit_message: default ``Upload <task name> <description>``.
            options: passed to :meth:`save_pretrained` (an archive's ``genome_dtype`` and
                ``plot``). A generator's images and training log come along when
                :attr:`path` holds them.

        Raises:
            InvalidRepoIdError: ``repo_id`` is not ``namespace/name`` (checked before
                anything is written).
            HubError: the Hub refused or could not be reached (see :mod:`zoo.hub`).
        """
        from zoo.hub import check_repo_id, push_directory

        check_repo_id(repo_id, namespace_required=True)
        source = self.path
        with tempfile.TemporaryDirectory(prefix="qdzoo-push-") as tmp:
            target = Path(tmp) / self.kind
            try:
                self.save_pretrained(target, **options)
            finally:
                self.path = source
            return push_directory(
                target,
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message or self.default_commit_message(),
            )

    @classmethod
    def push_saved(
        cls,
        directory: str | Path,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> tuple[str, list[str]]:
        """Upload the published files of a saved artifact directory as they are.

        The directory is loaded first (a broken artifact is refused); only
        :attr:`published_files` and the images its config lists are uploaded (a run's
        ``checkpoint/`` stays home).

        Returns:
            The commit sha and the uploaded file names.

        Raises:
            InvalidRepoIdError: ``repo_id`` is not ``namespace/name``.
            ArtifactError: the directory is not a valid artifact of this kind.
            HubError: the Hub refused or could not be reached.
        """
        from zoo.hub import check_repo_id, push_directory

        check_repo_id(repo_id, namespace_required=True)
        directory = Path(directory)
        artifact = cls.from_directory(directory)
        images = artifact.config.get("images") or []
        images = list(images.values()) if isinstance(images, Mapping) else list(images)
        names = [f for f in (*cls.published_files, *images) if (directory / f).is_file()]
        with tempfile.TemporaryDirectory(prefix="qdzoo-push-") as tmp:
            staging = Path(tmp) / directory.resolve().name
            for name in names:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(directory / name, staging / name)
            sha = push_directory(
                staging,
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message or f"{artifact.default_commit_message()} with qdzoo",
            )
        return sha, names
