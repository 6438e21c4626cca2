"""Pytrees to and from safetensors, atomic writes, checksums. No pickle anywhere.

A pytree is stored as one safetensors file whose keys are the leaves' paths
(``weights.0``, ``archive.fitness``, ...). Loading needs a *template* pytree of the same
structure (rebuilt from a config), whose leaves are replaced by the stored arrays after a
shape/dtype check. JAX PRNG keys are stored as their raw ``uint32`` data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from zoo.errors import ArtifactError, ChecksumError, ConfigError, FormatVersionError, ShapeError


def _key_name(entry: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_name(path: tuple[Any, ...]) -> str:
    """A pytree path as a dotted name, e.g. ``weights.0`` for ``.weights[0]``."""
    return ".".join(_key_name(p) for p in path)


def leaf_name(prefix: str, path: tuple[Any, ...]) -> str:
    """``prefix`` + dotted path; a bare array (empty path) is named ``prefix`` without its dot."""
    return prefix + path_name(path) if path else prefix.rstrip(".")


def _is_prng_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def tree_to_arrays(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a pytree into ``{path: numpy array}`` (typed PRNG keys become raw uint32 data)."""
    out: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None:
            continue
        if _is_prng_key(leaf):
            leaf = jax.random.key_data(leaf)
        name = leaf_name(prefix, path)
        if name in out:
            raise ValueError(f"two leaves share the name {name!r}")
        out[name] = np.ascontiguousarray(np.asarray(leaf))
    return out


def arrays_to_tree(template: Any, arrays: dict[str, np.ndarray], prefix: str = "") -> Any:
    """Replace the leaves of ``template`` by ``arrays[path]``, checking shapes and dtypes.

    Raises:
        ArtifactError: an array is missing.
        ShapeError: an array's shape differs from the template's.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
    new_leaves = []
    for path, leaf in leaves_with_path:
        name = leaf_name(prefix, path)
        if name not in arrays:
            raise ArtifactError(
                f"the file has no array {name!r} (expected by the config); it is incomplete "
                "or was written for another structure"
            )
        value = arrays[name]
        if _is_prng_key(leaf):
            expected = jax.eval_shape(jax.random.key_data, leaf).shape
            if value.shape != expected:
                raise ShapeError(
                    f"{name}: expected key data of shape {expected}, got {value.shape}"
                )
            new_leaves.append(jax.random.wrap_key_data(jnp.asarray(value)))
            continue
        shape = tuple(np.shape(leaf)) if not hasattr(leaf, "shape") else tuple(leaf.shape)
        if shape == () and value.shape == (1,):  # safetensors stores scalars as [1]
            value = value.reshape(())
        if tuple(value.shape) != shape:
            raise ShapeError(
                f"{name}: expected shape {shape} from the config, the file holds {value.shape}"
            )
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype
        new_leaves.append(jnp.asarray(value, dtype=dtype))
    return jax.tree_util.tree_unflatten(treedef, new_leaves)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finalise_file(path: Path, mode: int | None = None) -> None:
    """Give a freshly written file the mode the umask allows (``0o666 & ~umask`` unless
    ``mode``) and flush its contents to disk before it is renamed into place.

    Some writers (safetensors, ``tempfile.mkstemp``) create files readable by their owner
    only; an artifact's files follow the umask like any other file.
    """
    os.chmod(path, (0o666 & ~current_umask()) if mode is None else mode)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def finalise_tree(root: Path) -> None:
    """:func:`finalise_file` for every file under ``root``, then flush each directory."""
    for folder, _, names in os.walk(root):
        for name in names:
            if not os.path.islink(os.path.join(folder, name)):
                finalise_file(Path(folder) / name)
        fsync_directory(Path(folder))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    Works for files and directories. On an exception (or a kill) the old ``path`` is intact
    and the temporary is removed (or left as ``.tmp-*``, never under the final name). The
    new contents are flushed to disk (``fsync``) before the rename and the rename itself
    after it, so a crash or power loss leaves the old or the new version, never a torn or
    empty file; written files get the mode the umask allows (``0o666 & ~umask``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_dir():
            finalise_tree(tmp)
        elif tmp.is_file():
            finalise_file(tmp)
        if path.is_dir() and tmp.is_dir():
            old = path.parent / f".old-{path.name}-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            fsync_directory(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            fsync_directory(path.parent)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def save_arrays(
    path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> str:
    """Write ``arrays`` to a safetensors file atomically; return its sha256."""
    with atomic_path(path) as tmp:
        safetensors.numpy.save_file(arrays, str(tmp), metadata=metadata)
        digest = sha256_file(tmp)
    return digest


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a safetensors file; a missing or corrupted file raises ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return dict(safetensors.numpy.load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path} is not a readable safetensors file ({err})") from err


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match {expected} recorded in config.json; "
            "the file is corrupted or was changed after saving: download or save it again"
        )


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (pretty, sorted keys stable for diffs)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({err})") from err


# ---------------------------------------------------------------------------- config schema

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and math.isnan(v))


_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", _is_int),
    "positive int": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "number": ("a number", _is_number),
    "finite number": ("a finite number", lambda v: _is_number(v) and math.isfinite(v)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
    "list[str]": (
        "a list of strings",
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    ),
    "list[number]": (
        "a list of finite numbers",
        lambda v: isinstance(v, list) and all(_is_number(x) and math.isfinite(x) for x in v),
    ),
    "list[positive int]": (
        "a list of positive integers",
        lambda v: isinstance(v, list) and all(_is_int(x) and x > 0 for x in v),
    ),
    "sha256": ("a sha256 hex digest (64 characters 0-9a-f)", lambda v: isinstance(v, str)
               and bool(_SHA256.fullmatch(v))),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Field:
    """One entry of a config schema: where it is, what it must hold.

    Attributes:
        path: dotted key path, e.g. ``"archive.num_cells"``.
        kind: one of ``int``, ``positive int``, ``number``, ``finite number``, ``str``,
            ``bool``, ``dict``, ``list[str]``, ``list[number]``, ``list[positive int]``,
            ``sha256``.
        nullable: ``null`` is allowed (and the entries below it are then not checked).
        optional: the key may be absent.
        choices: the allowed values, if only some are.
    """

    path: str
    kind: str
    nullable: bool = False
    optional: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        text = _KINDS[self.kind][0]
        if self.choices is not None:
            text = "one of " + ", ".join(json.dumps(c) for c in self.choices)
        return text + (" or null" if self.nullable else "")


_MISSING = object()


def _lookup(config: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``_MISSING`` if a key is absent, ``None`` under a null)."""
    value = config
    for part in path.split("."):
        if value is None:
            return None
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


FIX_LOADED = "the file is incomplete or was edited by hand: save or download the artifact again"
"""How to fix a loaded config that fails :func:`check_fields`."""


def check_fields(
    config: Any,
    fields: Sequence[Field],
    where: str,
    *,
    fix: str = FIX_LOADED,
    error: type[Exception] = ArtifactError,
) -> None:
    """Check ``config`` against a schema: every field present (unless optional) and typed.

    A field below a ``null`` (allowed) parent is not checked. Fields are checked in order, so
    list parents before their entries.

    Args:
        config: the parsed JSON object.
        fields: the schema.
        where: the file, for messages (e.g. ``"run/config.json"``).

    Raises:
        ArtifactError: (or ``error``) a missing entry or one of another type, naming its key
            path.
    """
    for field in fields:
        parent, _, _ = field.path.rpartition(".")
        if parent and _lookup(config, parent) is None:
            continue
        value = _lookup(config, field.path)
        if value is _MISSING:
            if field.optional:
                continue
            raise error(f"{where} lacks {field.path!r} (expected {field.describe()}); {fix}")
        if value is None and field.nullable:
            continue
        ok = _KINDS[field.kind][1](value)
        if ok and field.choices is not None:
            ok = value in field.choices
        if not ok:
            raise error(
                f"{where}: {field.path!r} must be {field.describe()}, got "
                f"{json.dumps(value)[:80]}; {fix}"
            )


def check_artifact_header(
    config: Any, path: Path, kind: str, newest: int, written_by: str, hint: str = ""
) -> int:
    """Check the ``artifact`` kind and ``format_version`` of a ``config.json``; return the version.

    Args:
        config: the parsed ``config.json``.
        path: the artifact directory (for messages).
        kind: the expected ``artifact`` value (``"archive"`` or ``"generator"``).
        newest: the newest format version this qdzoo reads.
        written_by: what writes such a directory (named in the error for another kind).
        hint: appended to the kind error when ``config`` names another kind.

    Raises:
        ArtifactError: not a dict, another kind, or no integer ``format_version``.
        FormatVersionError: a version newer than ``newest``.
    """
    if not isinstance(config, dict) or config.get("artifact") != kind:
        found = config.get("artifact") if isinstance(config, dict) else type(config).__name__
        raise ArtifactError(
            f"{path} is not a qdzoo {kind} (config.json says artifact={found!r}){hint}; "
            f"expected a directory written by {written_by}"
        )
    version = config.get("format_version")
    if not _is_int(version) or version < 1:
        raise ArtifactError(
            f"{path}/config.json: format_version must be an integer >= 1, got "
            f"{json.dumps(version)}; the file is damaged or not written by qdzoo: save or "
            "download the artifact again"
        )
    if version > newest:
        raise FormatVersionError(
            f"{path} uses {kind} format version {version}; this qdzoo reads up to "
            f"{newest}. Upgrade qdzoo (pip install -U qdzoo) to load it."
        )
    return version


def dataclass_from_dict(cls: Any, d: Any, what: str) -> Any:
    """``cls(**d)`` for a dataclass ``cls``, refusing keys it has no field for.

    Raises:
        ConfigError: unknown keys (named, with the valid ones), as "unknown {what} keys".
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
        raise ConfigError(f"unknown {what} keys {sorted(unknown)}; valid: {sorted(fields)}")
    return cls(**d)
