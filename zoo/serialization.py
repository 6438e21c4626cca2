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
import os
import shutil
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    Works for files and directories. On an exception (or a kill) the old ``path`` is intact
    and the temporary is removed (or left as ``.tmp-*``, never under the final name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = path.parent / f".old-{path.name}-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
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
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({err})") from err


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
    if not isinstance(version, int):
        raise ArtifactError(f"{path}/config.json has no integer format_version")
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
