"""The zoo catalog: named pretrained artifacts, their Hub repos, metrics and bundled copies.

The catalog is a data file shipped with the package, ``zoo/data/catalog.json``, kept in step
with the recipes in ``training/recipes/`` (``qdzoo recipe run NAME --bundle`` updates the
entry of the recipe it ran). An entry names an artifact by a short name; loading that name
(``zoo.load_archive("walker2d-uni-map-elites")``) uses the copy bundled inside the package when
there is one (no network), else downloads the entry's Hub repo::

    import zoo
    for entry in zoo.list_models():
        print(entry.name, entry.repo_id, entry.metrics["qd_score"])
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ArtifactError, InvalidRepoIdError, UnknownModelError, UnknownNameError

DATA_DIR = Path(__file__).parent / "data"
"""The package's data folder: ``catalog.json`` and the bundled artifacts."""

CATALOG_PATH = DATA_DIR / "catalog.json"
"""The catalog data file."""

KINDS = ("archive", "generator")
"""Kinds of catalog entries."""

METRIC_NAMES = ("qd_score", "coverage", "max_fitness")
"""The metrics every catalog entry records (``None`` where not measured yet)."""

DISTILLATION_FIGURES = ("reward_ratio", "coverage_ratio", "js_divergence")
"""The distillation figures of a generator: mean return of its samples over the elites' own,
reconstructed coverage over the archive's, and the Jensen-Shannon divergence between requested
and achieved measures (``training/distill/evaluation.py``)."""

GENERATOR_METRIC_NAMES = DISTILLATION_FIGURES + tuple(f"ceiling_{n}" for n in DISTILLATION_FIGURES)
"""The figures a generator's entry also records: :data:`DISTILLATION_FIGURES`, and the same
figures of the archive's ceiling (``ceiling_*``: its own elites with small parameter noise in
place of the generator, same protocol; ``None`` where not measured)."""

_OPTIONAL_FIELDS = ("protocol",)


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One named artifact of the zoo.

    Attributes:
        name: the catalog name (what ``zoo.load_archive(name)`` accepts).
        kind: ``"archive"`` or ``"generator"``.
        task: task name (``zoo.tasks.make``).
        algorithm: algorithm that made it.
        repo_id: the Hub repo holding it (``namespace/name``).
        recipe: the recipe in ``training/recipes/`` that reproduces it, or ``None``.
        size: bytes of the artifact's files.
        metrics: ``qd_score``, ``coverage``, ``max_fitness`` (``None`` if unknown).
        bundled: path of the copy shipped in the package, relative to ``zoo/data/``, or
            ``None`` if the artifact is only on the Hub.
        description: one sentence for listings.
        protocol: how its metrics were measured (:func:`protocol_of`), or ``None``.
    """

    name: str
    kind: str
    task: str
    algorithm: str
    repo_id: str
    recipe: str | None
    size: int
    metrics: Mapping[str, float | None]
    bundled: str | None
    description: str
    protocol: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CatalogEntry:
        """Build an entry from its JSON object, checking keys and values."""
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [f for f in fields if f not in data and f not in _OPTIONAL_FIELDS]
        unknown = sorted(set(data) - set(fields))
        name = data.get("name", "?")
        if missing or unknown:
            raise ArtifactError(
                f"catalog entry {name!r} in {CATALOG_PATH}: missing keys {missing}, unknown keys "
                f"{unknown}; expected {fields} ({list(_OPTIONAL_FIELDS)} optional)"
            )
        if data["kind"] not in KINDS:
            raise ArtifactError(
                f"catalog entry {name!r}: kind must be one of {list(KINDS)}, got {data['kind']!r}"
            )
        names = METRIC_NAMES + (GENERATOR_METRIC_NAMES if data["kind"] == "generator" else ())
        metrics = {k: data["metrics"].get(k) for k in names}
        return cls(
            **{**data, "size": int(data["size"]), "metrics": types.MappingProxyType(metrics)}
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this entry (as stored in ``catalog.json``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["metrics"] = dict(self.metrics)
        return out

    def bundled_path(self) -> Path | None:
        """The directory of the bundled copy if the entry has one and it is installed."""
        if self.bundled is None:
            return None
        path = DATA_DIR / self.bundled
        return path if (path / "config.json").is_file() else None


def _read(path: Path | None = None) -> list[CatalogEntry]:
    """The entries of the catalog file ``path`` (default :data:`CATALOG_PATH`)."""
    path = CATALOG_PATH if path is None else path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as err:
        raise ArtifactError(f"the catalog {path} is not valid JSON ({err})") from err
    entries = [CatalogEntry.from_dict(item) for item in data.get("models", [])]
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ArtifactError(f"the catalog {path} names {duplicates} more than once")
    return entries


def list_models(kind: str | None = None) -> list[CatalogEntry]:
    """The catalog entries (of one ``kind`` if given), in catalog order."""
    entries = _read()
    return entries if kind is None else [e for e in entries if e.kind == kind]


def names() -> list[str]:
    """Every catalog name."""
    return [e.name for e in _read()]


def find_entry(name: str) -> CatalogEntry | None:
    """The entry called ``name``, or ``None``."""
    return next((e for e in _read() if e.name == name), None)


def get_entry(name: str) -> CatalogEntry:
    """The entry called ``name``.

    Raises:
        UnknownNameError: no such entry (the message lists the catalog names).
    """
    entry = find_entry(name)
    if entry is None:
        raise UnknownNameError("catalog name", name, names())
    return entry


def write_entry(entry: CatalogEntry, path: Path | None = None) -> None:
    """Add ``entry`` to the catalog file, or replace the entry of the same name."""
    path = CATALOG_PATH if path is None else path
    entries = _read(path)
    for i, old in enumerate(entries):
        if old.name == entry.name:
            entries[i] = entry
            break
    else:
        entries.append(entry)
    text = json.dumps({"models": [e.to_dict() for e in entries]}, indent=2) + "\n"
    from zoo.serialization import write_text

    write_text(path, text)


def protocol_of(config: Mapping[str, Any]) -> str:
    """How an artifact's metrics were measured, in a few words, from its ``config.json``.

    Archives: ``"robust: 8 stochastic episodes"`` for a robust re-evaluation
    (:mod:`zoo.robust`), else ``"deterministic reset, 1 episode"`` (or stochastic). Generators:
    the reset and rollouts of their evaluation, said the same way as their source archive's
    robust protocol when they match it (the mean over its ``K`` stochastic episodes).
    """
    evaluation = config.get("evaluation") or {}
    if evaluation.get("protocol") == "robust":
        return f"robust: {int(evaluation['episodes'])} stochastic episodes"
    reset = evaluation.get("reset") or config.get("task", {}).get("kwargs", {}).get("reset")
    episodes = int(evaluation.get("rollouts", 1))
    source = (config.get("source_archive") or {}).get("evaluation") or {}
    if source.get("protocol") == "robust" and reset == "stochastic":
        if episodes == int(source["episodes"]):
            return f"robust: {episodes} stochastic episodes"
    return f"{reset or 'deterministic'} reset, {episodes} episode{'s' * (episodes != 1)}"


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _distillation_figure(metrics: Mapping[str, Any], name: str) -> str:
    """A generator's figure, with the archive's ceiling in brackets where it was measured."""
    ceiling = metrics.get(f"ceiling_{name}")
    shown = _figure(metrics.get(name), ".3f")
    return shown if ceiling is None else f"{shown} ({_figure(ceiling, '.3f')})"


def markdown_table(entries: list[CatalogEntry] | None = None) -> str:
    """The zoo as a Markdown table (``qdzoo list --markdown``; the README's "Zoo" table).

    One row per entry: task, algorithm, the protocol its figures were measured with, QD score,
    coverage, max fitness, and for generators the distillation figures (reward ratio,
    reconstructed coverage ratio, JS divergence; the archive's ceiling in brackets where
    measured), size and Hub repo.
    """
    entries = list_models() if entries is None else entries
    header = (
        "| name | kind | task | algorithm | protocol | QD score | coverage | max fitness "
        "| reward ratio | coverage ratio | JS div. | size | Hub repo |"
    )
    lines = [header, "|" + " --- |" * header.count(" | ") + " --- |"]
    for e in entries:
        m = e.metrics
        coverage = m.get("coverage")
        size = f"{e.size / 2**20:.1f} MiB"
        bundled = " (bundled)" if e.bundled else ""
        lines.append(
            f"| `{e.name}`{bundled} | {e.kind} | `{e.task}` | {e.algorithm} | "
            f"{e.protocol or '-'} | {_figure(m.get('qd_score'), ',.0f')} | "
            f"{'-' if coverage is None else f'{100 * coverage:.1f}%'} | "
            f"{_figure(m.get('max_fitness'), '.2f')} | "
            + " | ".join(_distillation_figure(m, name) for name in DISTILLATION_FIGURES)
            + f" | {size} | `{e.repo_id}` |"
        )
    return "\n".join(lines)


__all__ = [
    "CATALOG_PATH",
    "GENERATOR_METRIC_NAMES",
    "METRIC_NAMES",
    "CatalogEntry",
    "DISTILLATION_FIGURES",
    "find_entry",
    "get_entry",
    "list_models",
    "markdown_table",
    "names",
    "protocol_of",
    "write_entry",
]


def article(word: str) -> str:
    """``word`` with its indefinite article: ``an archive``, ``a generator``."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def resolve_artifact(
    name_or_path: str | Path,
    kind: str,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """The local directory of an artifact of ``kind`` given a catalog name, a directory or a
    Hub repo id (tried in that order).

    A catalog name loads the copy bundled in the package when there is one and no
    ``revision`` is asked for (no network), else the entry's Hub repo. Write a local directory
    that shares a catalog name as ``./name``.

    Raises:
        ArtifactError: the catalog entry is of another kind.
        UnknownModelError: a name without ``/`` that is neither a catalog name nor a directory.
        HubError: the repo could not be fetched (see :mod:`zoo.hub`).
    """
    if isinstance(name_or_path, str) and not name_or_path.strip():
        raise InvalidRepoIdError(
            f"got an empty name; expected a catalog name ({', '.join(names()) or 'none'}), the "
            f"path of {article(kind)} directory (write the current directory as '.') or a Hub "
            "repo id such as 'qdzoo/ant-archive'"
        )
    if isinstance(name_or_path, str) and (entry := find_entry(name_or_path)):
        if entry.kind != kind:
            raise ArtifactError(
                f"catalog entry {name_or_path!r} is {article(entry.kind)}, not {article(kind)}; "
                f"load it with zoo.load_{entry.kind}({name_or_path!r}), or pick one of "
                f"{[e.name for e in list_models(kind)]}"
            )
        bundled = entry.bundled_path()
        if bundled is not None and revision is None:
            return bundled
        name_or_path = entry.repo_id
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and "/" not in name_or_path and "\\" not in name_or_path:
        raise UnknownModelError(name_or_path, names())
    from zoo.hub import resolve_local_or_hub

    return resolve_local_or_hub(name_or_path, revision, token=token)


def recorded_path(path: str | Path) -> str:
    """``path`` as an artifact records it, without this machine's directories: a bundled file
    as ``zoo/data/...``, a file under the working directory relative to it, one under the
    home directory from ``~``, anything else as given."""
    resolved = Path(path).resolve()
    for root, prefix in ((DATA_DIR.resolve(), "zoo/data/"), (Path.cwd().resolve(), "")):
        if resolved.is_relative_to(root):
            return prefix + resolved.relative_to(root).as_posix()
    home = Path.home().resolve()
    if resolved.is_relative_to(home):
        return "~/" + resolved.relative_to(home).as_posix()
    return str(path)
