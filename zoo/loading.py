"""Load an artifact of either kind: ``zoo.load_artifact(name_or_path)``.

For tools that take "an artifact" (``qdzoo info``) rather than an archive or a generator:
the kind is read from the catalog entry, or from the ``artifact`` field of the directory's
``config.json``, and the matching class loads and checks it.
"""

from __future__ import annotations

from pathlib import Path

from zoo.archive_artifact import ArchiveArtifact
from zoo.artifact import CONFIG_NAME, Artifact
from zoo.catalog import find_entry, resolve_artifact
from zoo.errors import ArtifactError
from zoo.generator import Generator
from zoo.serialization import read_json

KINDS: dict[str, type[Artifact]] = {"archive": ArchiveArtifact, "generator": Generator}


def load_artifact(
    name_or_path: str | Path, *, revision: str | None = None, token: str | None = None
) -> Artifact:
    """An archive or a generator from a catalog name, a local directory or a Hub repo id.

    Raises:
        ArtifactError: the directory's config names no known artifact kind (or it is not a
            valid artifact of its kind).
        UnknownModelError, HubError: as :func:`zoo.load_archive`.
    """
    entry = find_entry(name_or_path) if isinstance(name_or_path, str) else None
    kind = entry.kind if entry is not None else "archive"
    path = resolve_artifact(name_or_path, kind, revision, token)
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise ArtifactError(
            f"{path} has no {CONFIG_NAME}; expected an artifact directory (config.json + "
            "*.safetensors + README.md) saved by qdzoo"
        )
    config = read_json(config_path)
    found = config.get("artifact") if isinstance(config, dict) else None
    if found not in KINDS:
        raise ArtifactError(
            f"{config_path} names the artifact kind {found!r}; expected one of "
            f"{sorted(KINDS)} (field 'artifact')"
        )
    return KINDS[found].from_directory(path)
