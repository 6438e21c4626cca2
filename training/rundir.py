"""Run directories, shared by ``qdzoo train`` and ``qdzoo distill``.

A run directory ``OUT`` holds what a run publishes (its artifact, written at the end), the
metrics log ``metrics.jsonl`` (JSON lines, appended as the run goes) and ``checkpoint/``:
``run.json`` (the run record: everything that defines the run, written once at the start)
and one or more safetensors files of pytrees, each rewritten atomically. Resuming checks that
the stored record equals the given one, loads the checkpointed pytrees and drops the log rows
written after the last checkpoint of an interrupted run (and a last row a kill cut short).
Temporaries a kill left behind mid-write (``.tmp-*``, ``.old-*`` beside the files they were
replacing) are removed when a run starts or resumes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from jaxtyping import PyTree

from zoo.errors import ArtifactError, ConfigError, OutputExistsError
from zoo.serialization import (
    arrays_to_tree,
    load_arrays,
    read_json,
    save_arrays,
    tree_to_arrays,
    write_json,
)

__all__ = ["CHECKPOINT_DIR", "METRICS_LOG", "RUN_RECORD", "RunDir"]

CHECKPOINT_DIR = "checkpoint"
RUN_RECORD = "run.json"
METRICS_LOG = "metrics.jsonl"
TEMPORARY_PREFIXES = (".tmp-", ".old-")
"""Name prefixes of the temporaries of atomic writes (:func:`zoo.serialization.atomic_path`):
one left in a run directory is the remains of a write a kill interrupted."""


def _json(value: Any) -> Any:
    """``value`` as JSON would read it back (tuples become lists)."""
    return json.loads(json.dumps(value))


class RunDir:
    """The run directory ``path`` of a run of some ``kind`` (named in messages).

    Attributes:
        path: the directory.
        kind: ``""`` or a word naming the run in messages (``"distillation"``: "has no
            distillation checkpoint to resume").
    """

    def __init__(self, path: str | Path, kind: str = "") -> None:
        self.path = Path(path)
        self.kind = kind

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def record_path(self) -> Path:
        return self.checkpoint_dir / RUN_RECORD

    @property
    def log_path(self) -> Path:
        return self.path / METRICS_LOG

    # ---------------------------------------------------------------------- the directory

    def prepare(
        self,
        record: Mapping[str, Any],
        *,
        resume: bool,
        overwrite: bool,
        parts: Mapping[str, str] | None = None,
        canonical: Callable[[Any], Any] | None = None,
    ) -> bool:
        """Check the directory for a run defined by ``record``; return True to resume.

        A missing or empty directory starts a fresh run (also with ``resume``, when nothing
        was checkpointed yet). Otherwise ``overwrite`` deletes it and ``resume`` compares the
        stored record with ``record``. Nothing is written: call :meth:`start` for a fresh run.

        Args:
            record: JSON-serialisable definition of the run (stored in ``checkpoint/run.json``).
            resume: continue the checkpointed run in the directory.
            overwrite: replace a non-empty directory.
            parts: the record's top-level entries compared one by one, each with the words
                naming it in the message (``{"config": "config", "archive": "archive"}``);
                ``None``: the record is the run's config, compared as a whole.
            canonical: maps a stored or given record (as JSON reads it) to the form compared
                (e.g. parse a config and fill the defaults of fields added since).

        Raises:
            OutputExistsError: the directory is not empty and neither ``resume`` nor
                ``overwrite``.
            ArtifactError: ``resume`` on a non-empty directory with no run record.
            ConfigError: ``resume`` with a record that differs from the stored one (the
                message names the differing part and, for a dict, its differing keys).
        """
        if resume:
            self.remove_temporaries()
            if not self.record_path.is_file():
                if self.path.exists() and any(self.path.iterdir()):
                    what = f"{self.kind} checkpoint" if self.kind else "checkpoint"
                    raise ArtifactError(
                        f"--resume: {self.path} has no {what} to resume ({self.record_path} "
                        "missing)"
                    )
                return False  # nothing started yet: a fresh run
            normal = canonical or (lambda value: value)
            stored = normal(read_json(self.record_path))
            given = normal(_json(dict(record)))
            sections = {None: "config"} if parts is None else parts
            for name, what in sections.items():
                old = stored if name is None else stored.get(name)
                new = given if name is None else given.get(name)
                if old != new:
                    raise ConfigError(
                        f"--resume: the run in {self.path} was started with a different "
                        f"{what}{_difference(old, new)}; resume with the same arguments or use "
                        "a new --out"
                    )
            return True
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"{self.path} already exists and is not empty; pass --resume to continue the "
                    "run in it or --overwrite to replace it"
                )
            shutil.rmtree(self.path)
        return False

    def start(self, record: Mapping[str, Any]) -> None:
        """Begin a fresh run: create the directory, store ``record``, empty the log."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_temporaries()
        write_json(self.record_path, _json(dict(record)))
        self.log_path.unlink(missing_ok=True)

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporaries of interrupted atomic writes (``.tmp-*``, ``.old-*``) in the
        directory and its ``checkpoint/``; return what was deleted. The files they were
        replacing are intact (a checkpoint) or written again at the end of the run."""
        removed = []
        for folder in (self.path, self.checkpoint_dir):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith(TEMPORARY_PREFIXES):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(entry)
        return removed

    # ------------------------------------------------------------------------ checkpoints

    def has_checkpoint(self, name: str) -> bool:
        """Whether ``checkpoint/name`` exists."""
        return (self.checkpoint_dir / name).is_file()

    def save(self, name: str, tree: PyTree) -> None:
        """Write the array leaves of ``tree`` to ``checkpoint/name`` (safetensors), atomically:
        a kill leaves the previous checkpoint intact."""
        save_arrays(self.checkpoint_dir / name, tree_to_arrays(tree))

    def load(self, name: str, template: PyTree) -> PyTree:
        """Read ``checkpoint/name`` into the structure of ``template`` (arrays or
        ``jax.ShapeDtypeStruct`` leaves; shapes and dtypes are checked).

        Raises:
            ArtifactError: the file is missing, unreadable or lacks a leaf of ``template``.
            ShapeError: a stored array's shape differs from the template's.
        """
        return arrays_to_tree(template, load_arrays(self.checkpoint_dir / name))

    def counter(self, name: str, leaf: str) -> int | None:
        """The integer leaf ``leaf`` (e.g. ``"step"``, ``"iteration"``) of ``checkpoint/name``:
        a scalar, or an array of one value (shape ``(1,)``, or one copy per device);
        ``None`` when the file does not exist (nothing checkpointed yet).

        Raises:
            ArtifactError: the file is unreadable, lacks ``leaf`` or holds differing values.
        """
        path = self.checkpoint_dir / name
        if not path.is_file():
            return None
        arrays = load_arrays(path)
        if leaf not in arrays:
            raise ArtifactError(
                f"checkpoint {path} has no {leaf!r} array (it has {sorted(arrays)[:8]}); it "
                "was not written by this run: start again with --overwrite"
            )
        values = np.unique(np.asarray(arrays[leaf]).reshape(-1))
        if values.size != 1:
            raise ArtifactError(
                f"checkpoint {path}: expected one {leaf!r} value, found {values.tolist()[:8]}; "
                "the checkpoint is damaged: start again with --overwrite"
            )
        return int(values[0])

    def interrupted(self, progress: str | None) -> str:
        """The message of a run stopped by Ctrl-C, given what its last checkpoint holds
        (``"iteration 40 of 60"``; ``None``: nothing checkpointed yet)."""
        if progress is None:
            return (
                f"interrupted before the first checkpoint; nothing in {self.path} is worth "
                "keeping: run the same command with --resume to start from the beginning"
            )
        return (
            f"interrupted; the last checkpoint in {self.checkpoint_dir} ({progress}) is "
            "intact: continue with --resume"
        )

    # ------------------------------------------------------------------------ metrics log

    def open_log(self) -> IO[str]:
        """The metrics log, opened for appending (use as a context manager)."""
        return open(self.log_path, "a")

    @staticmethod
    def write_rows(log: IO[str], rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` to ``log`` as JSON lines and flush."""
        for row in rows:
            log.write(json.dumps(row) + "\n")
        log.flush()

    def truncate_log(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Keep the log rows for which ``keep(row)`` holds (on resume: the rows up to the
        last checkpoint; an interrupted run may have logged past it). Blank lines go too, and
        so does a last line that is not valid JSON (a kill cut its writing short).

        Raises:
            ArtifactError: a line other than the last is not valid JSON.
        """
        if not self.log_path.exists():
            return
        lines = [line for line in self.log_path.read_text().splitlines() if line.strip()]
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if number == len(lines):
                    break  # torn by a kill mid-write: its chunk was not checkpointed
                raise ArtifactError(
                    f"{self.log_path}: line {number} is not valid JSON ({err}): {line[:80]!r}; "
                    "the log is damaged: delete that line (or start again with --overwrite)"
                ) from None
            if keep(row):
                kept.append(line)
        self.log_path.write_text("".join(line + "\n" for line in kept))


def _difference(stored: Any, given: Any) -> str:
    """`` (stored vs given: {key: (stored, given)})`` for two dicts, ``""`` otherwise."""
    if not (isinstance(stored, Mapping) and isinstance(given, Mapping)):
        return ""
    keys = list(stored) + [k for k in given if k not in stored]
    diff = {k: (stored.get(k), given.get(k)) for k in keys if stored.get(k) != given.get(k)}
    return f" (stored vs given: {diff})"
