"""Hub I/O: fetch artifact directories from the Hugging Face Hub and publish them.

Every qdzoo artifact is a directory (``config.json`` + ``*.safetensors`` + ``README.md``, maybe
sub-folders). This module moves such directories to and from the Hub through
``huggingface_hub``, and turns every client error into a :class:`zoo.errors.HubError` (one of
its subclasses in :mod:`zoo.errors`) whose message says what went wrong and how to fix it.
Nothing here ever unpickles anything: the files are only copied, and the readers use JSON and
safetensors.

The client honours its usual environment: ``HF_TOKEN`` (or the token saved by
``huggingface-cli login``), ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` / ``HF_HUB_CACHE``.
Note that ``huggingface_hub`` reads those variables when it is first imported.

Every Hub request made here times out: a metadata request (repo info, file heads) after
``HF_HUB_ETAG_TIMEOUT`` seconds, any other request (file contents, uploads, commits) after
``HF_HUB_DOWNLOAD_TIMEOUT`` seconds without progress, both :data:`DEFAULT_TIMEOUT_S` (10 s)
unless set. Unlike ``huggingface_hub``, these two are read at every call, so they may be set at
run time. A request that times out raises :class:`~zoo.errors.HubConnectionError` (unless the
files asked for are complete in the cache).

- :func:`resolve_local_or_hub`: a local directory as is, or the cached snapshot of a repo.
- :func:`resolve_file`: one file of a local directory or of a repo.
- :func:`download_to`: a repo copied into a directory of your choice, atomically.
- :func:`push_directory`: a directory uploaded as one commit (optionally tagged).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from zoo.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    HubAuthError,
    HubConnectionError,
    HubError,
    HubFileNotFoundError,
    HubOfflineError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    InvalidRepoIdError,
    OutputExistsError,
    UnsafeRepoPathError,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "check_repo_id",
    "download_to",
    "push_directory",
    "resolve_file",
    "resolve_local_or_hub",
    "timeouts",
    "translate_error",
]

Token = str | bool | None
"""A token argument as ``huggingface_hub`` takes it: a string, ``True`` (the saved token),
``False`` (send none) or ``None`` (``HF_TOKEN`` or the saved token, if any)."""

Patterns = str | Sequence[str] | None
"""Glob patterns (``fnmatch`` style, on ``/``-separated repo paths; a trailing ``/`` means the
whole folder) selecting files, as ``huggingface_hub`` applies them."""


# ------------------------------------------------------------------------------ timeouts

DEFAULT_TIMEOUT_S = 10.0
"""Seconds a Hub request may wait (to connect, or for the next bytes) unless
``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT`` say otherwise."""

_TIMEOUT_VARIABLES = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")

_ACTIVE_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "qdzoo_hub_timeout", default=None
)
"""The timeout given to requests that set none, while a call of this module runs."""


def _timeout_from_env(name: str) -> float:
    """The timeout in seconds that the environment variable ``name`` sets (default 10 s)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{name} must be a positive number of seconds, got {text!r}; set it to e.g. 10 "
            f"or unset it for the default of {DEFAULT_TIMEOUT_S:g} s"
        )
    return value


def timeouts() -> tuple[float, float]:
    """``(metadata, transfer)`` timeouts in seconds, read from the environment now.

    ``metadata`` (``HF_HUB_ETAG_TIMEOUT``) bounds repo-info and file-head requests;
    ``transfer`` (``HF_HUB_DOWNLOAD_TIMEOUT``) bounds every other request: file contents,
    uploads, commits. Each is the longest wait to connect or between two reads or writes.

    Raises:
        ConfigError: a variable that is not a positive number.
    """
    return _timeout_from_env(_TIMEOUT_VARIABLES[0]), _timeout_from_env(_TIMEOUT_VARIABLES[1])


def _fill_timeout(request: object) -> None:
    """Request hook: give a request that has no timeout the active one (if a call is active).

    ``huggingface_hub`` sends some requests (repo info inside ``snapshot_download``, commits)
    with no timeout at all, which waits forever on a server that accepts and never answers.
    """
    seconds = _ACTIVE_TIMEOUT.get()
    extensions = getattr(request, "extensions", None)
    if seconds is None or not isinstance(extensions, dict):
        return
    current = extensions.get("timeout")
    if isinstance(current, dict):
        extensions["timeout"] = {k: seconds if v is None else v for k, v in current.items()}


def _install_timeout_hook() -> None:
    """Add :func:`_fill_timeout` to the shared ``huggingface_hub`` session (once per session)."""
    from huggingface_hub.utils import get_session

    hooks = getattr(get_session(), "event_hooks", None)
    if isinstance(hooks, dict) and _fill_timeout not in hooks.get("request", []):
        hooks.setdefault("request", []).append(_fill_timeout)


@contextlib.contextmanager
def _timeout_scope(seconds: float) -> Iterator[None]:
    """Give every request without a timeout sent inside the block ``seconds``."""
    _install_timeout_hook()
    token = _ACTIVE_TIMEOUT.set(seconds)
    try:
        yield
    finally:
        _ACTIVE_TIMEOUT.reset(token)


# ------------------------------------------------------------------------------ repo ids

_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?")
_LOGIN_HINT = (
    "to read it, authenticate with a token that has access (set HF_TOKEN, run "
    "`huggingface-cli login` or `hf auth login`, or pass token=...)"
)


def _repo_id_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a valid ``namespace/name`` (or ``name``) Hub id, or ``None``."""
    parts = repo_id.split("/")
    if len(parts) > 2:
        return "it has more than one '/'"
    for part in parts:
        if not part:
            return "it has an empty part"
        if not _NAME.fullmatch(part):
            return (
                f"{part!r} must be 1-96 characters among letters, digits, '-', '_' and '.', "
                "starting and ending with a letter, digit or '_'"
            )
        if "--" in part or ".." in part:
            return f"{part!r} contains '--' or '..'"
    if repo_id.endswith(".git"):
        return "it ends with '.git'"
    return None


def check_repo_id(repo_id: str, *, namespace_required: bool = False) -> str:
    """Return ``repo_id`` if it is a well-formed Hub repo id, else raise InvalidRepoIdError.

    Args:
        repo_id: ``"namespace/name"`` (or ``"name"`` unless ``namespace_required``).
        namespace_required: Refuse ids without a namespace (pushing needs one).
    """
    if not isinstance(repo_id, str):
        raise InvalidRepoIdError(
            f"expected a Hub repo id string like 'qdzoo/ant-archive', got {type(repo_id).__name__}"
        )
    problem = _repo_id_problem(repo_id)
    if problem is None and namespace_required and "/" not in repo_id:
        problem = "it has no namespace"
    if problem is not None:
        raise InvalidRepoIdError(
            f"invalid Hub repo id {repo_id!r}: {problem}; expected 'namespace/name' "
            "such as 'qdzoo/ant-archive'"
        )
    return repo_id


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` is written as a file-system path rather than a repo id."""
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text in (".", "..")
        or "\\" in text
        or bool(re.match(r"^[A-Za-z]:", text))
    )


# ------------------------------------------------------------------------- error mapping


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_location(cache_dir: str | Path | None) -> str:
    from huggingface_hub import constants

    return str(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)


def _connection_error_types() -> tuple[type[BaseException], ...]:
    """Transport-level error classes of the HTTP libraries ``huggingface_hub`` may use."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError", "TimeoutException")),
        ("httpx", ("TransportError", "TimeoutException")),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            loaded = __import__(module)
        except ImportError:
            continue
        types.extend(getattr(loaded, name) for name in names if hasattr(loaded, name))
    return tuple(types)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the chain of exceptions that caused it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _server_message(error: BaseException) -> str:
    """The Hub's own explanation of an HTTP error, if it sent one."""
    message = getattr(error, "server_message", None)
    if message:
        return str(message).strip()
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None and headers.get("X-Error-Message"):
        return str(headers.get("X-Error-Message"))
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _describe(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def translate_error(
    error: BaseException,
    *,
    repo_id: str,
    revision: str | None = None,
    filename: str | None = None,
    cache_dir: str | Path | None = None,
    action: str = "download",
) -> BaseException:
    """The qdzoo error for a ``huggingface_hub`` (or transport) error, or ``error`` unchanged.

    Args:
        error: What the client raised.
        repo_id: The repo the call was about.
        revision: The revision asked for (``None``: the default branch).
        filename: The file asked for, if one.
        cache_dir: The cache used (``None``: ``HF_HUB_CACHE``), named in offline messages.
        action: ``"download"`` or ``"push"``, to word the message.
    """
    from huggingface_hub import errors as hf_errors

    endpoint = _endpoint()
    what = _describe(repo_id, revision)
    local_entry = getattr(hf_errors, "LocalEntryNotFoundError", ())
    offline_type = getattr(hf_errors, "OfflineModeIsEnabled", ())
    gated = getattr(hf_errors, "GatedRepoError", ())
    repo_missing = getattr(hf_errors, "RepositoryNotFoundError", ())
    revision_missing = getattr(hf_errors, "RevisionNotFoundError", ())
    entry_missing = getattr(hf_errors, "EntryNotFoundError", ())
    disabled = getattr(hf_errors, "DisabledRepoError", ())
    http_error = getattr(hf_errors, "HfHubHTTPError", ())
    validation = getattr(hf_errors, "HFValidationError", ())
    no_token = getattr(hf_errors, "LocalTokenNotFoundError", ())

    if isinstance(error, HubError):
        return error
    offline = _offline() or any(isinstance(e, offline_type) for e in _causes(error))
    if offline and (isinstance(error, (local_entry, offline_type))):
        if action == "push":
            return HubOfflineError(
                f"cannot {action} {repo_id!r}: offline mode is on (HF_HUB_OFFLINE=1); "
                "unset HF_HUB_OFFLINE (or set it to 0) to reach the Hub"
            )
        item = f"file {filename!r} of {what}" if filename else what
        return HubOfflineError(
            f"offline mode is on (HF_HUB_OFFLINE=1) and {item} is not (fully) in the cache "
            f"({_cache_location(cache_dir)}); download it once with network access, or unset "
            "HF_HUB_OFFLINE (or set it to 0) to fetch it now"
        )
    if isinstance(error, local_entry):
        for cause in _causes(error):
            if cause is not error and isinstance(cause, http_error):
                return translate_error(
                    cause,
                    repo_id=repo_id,
                    revision=revision,
                    filename=filename,
                    cache_dir=cache_dir,
                    action=action,
                )
        return HubConnectionError(
            f"could not reach the Hub at {endpoint} (HF_ENDPOINT) to {action} {what}, and it is "
            f"not complete in the cache ({_cache_location(cache_dir)}); check the network "
            "connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use cached files only"
        )
    if isinstance(error, gated):
        return HubAuthError(
            f"{repo_id!r} is a gated repo and this token has no access to it; accept its "
            f"conditions on {endpoint}/{repo_id} and authenticate (set HF_TOKEN or run "
            "`huggingface-cli login`)"
        )
    if isinstance(error, repo_missing):
        return HubRepoNotFoundError(
            f"Hub repo {repo_id!r} not found at {endpoint}: check the spelling. It may also be "
            f"private or gated: {_LOGIN_HINT}"
        )
    if isinstance(error, revision_missing):
        return HubRevisionNotFoundError(
            f"revision {revision or 'main'!r} not found in Hub repo {repo_id!r}; expected an "
            "existing branch, tag or commit sha (list them with "
            f"`huggingface_hub.list_repo_refs({repo_id!r})`)"
        )
    if isinstance(error, entry_missing):
        item = f"file {filename!r}" if filename else "a requested file"
        return HubFileNotFoundError(
            f"{item} not found in Hub repo {what}; check the file name, or the revision "
            "(older revisions may lack newer files)"
        )
    if isinstance(error, disabled):
        return HubError(f"Hub repo {repo_id!r} has been disabled by its owner or the Hub")
    if isinstance(error, no_token):
        return HubAuthError(
            f"a token is required to {action} {repo_id!r} but none was found; set HF_TOKEN, run "
            "`huggingface-cli login`, or pass token=..."
        )
    if isinstance(error, validation):
        return InvalidRepoIdError(f"invalid Hub repo id or revision for {what}: {error}")
    if isinstance(error, http_error):
        status = _status(error)
        detail = _server_message(error)
        if status in (401, 403):
            if action == "push":
                return HubAuthError(
                    f"the Hub at {endpoint} refused to let you write to {repo_id!r} ({status}: "
                    f"{detail}); authenticate with a token that has write access to its "
                    "namespace (set HF_TOKEN, run `huggingface-cli login`, or pass token=...)"
                )
            return HubAuthError(
                f"the Hub at {endpoint} refused access to {what} ({status}: {detail}); "
                "check your token (HF_TOKEN, `huggingface-cli login`, or token=...)"
            )
        if status == 409 and action == "push":
            return HubError(f"conflict while pushing to {what}: {detail}")
        return HubError(
            f"the Hub at {endpoint} (HF_ENDPOINT) answered {status} for {what}: {detail}; "
            "retry later, or check HF_ENDPOINT"
        )
    if isinstance(error, _connection_error_types()):
        timed_out = any(
            isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in _causes(error)
        )
        hint = (
            " (the request timed out; raise HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT, in "
            "seconds, for a slow connection)"
            if timed_out
            else ""
        )
        return HubConnectionError(
            f"could not reach the Hub at {endpoint} (HF_ENDPOINT) to {action} {what} "
            f"({type(error).__name__}: {error}){hint}; check the network connection and "
            "HF_ENDPOINT"
        )
    if isinstance(error, ValueError) and (
        "Invalid filename" in str(error) or "Invalid pointer path" in str(error)
    ):
        return UnsafeRepoPathError(
            f"Hub repo {what} holds a file name that would be written outside the target "
            f"directory; refusing to download it ({error})"
        )
    return error


@contextlib.contextmanager
def _hub_errors(
    repo_id: str,
    revision: str | None = None,
    *,
    filename: str | None = None,
    cache_dir: str | Path | None = None,
    action: str = "download",
) -> Iterator[None]:
    """Re-raise client errors inside the block as qdzoo errors (see :func:`translate_error`).

    Requests sent inside the block without a timeout get ``HF_HUB_DOWNLOAD_TIMEOUT``.
    """
    seconds = timeouts()[1]
    try:
        with _timeout_scope(seconds):
            yield
    except Exception as error:
        translated = translate_error(
            error,
            repo_id=repo_id,
            revision=revision,
            filename=filename,
            cache_dir=cache_dir,
            action=action,
        )
        if translated is error:
            raise
        raise translated from error


# ------------------------------------------------------------------------------ download


def _as_patterns(patterns: Patterns) -> list[str] | None:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _local_directory(path_or_repo_id: str | Path, revision: str | None) -> Path | None:
    """The local artifact directory ``path_or_repo_id`` names, or ``None`` if it names none.

    Raises :class:`ArtifactNotFoundError` for something that is clearly a path but not a
    directory.
    """
    if isinstance(path_or_repo_id, str) and not path_or_repo_id.strip():
        raise InvalidRepoIdError(
            "got an empty string; it is neither an existing local directory nor a valid Hub repo "
            "id: expected the path of an artifact directory or a repo id such as "
            "'qdzoo/ant-archive'"
        )
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        if revision is not None:
            warnings.warn(
                f"{str(path_or_repo_id)!r} is a local directory, so revision={revision!r} is "
                "ignored; pass a Hub repo id to select a revision",
                UserWarning,
                stacklevel=3,
            )
        return path
    if path.exists():
        raise ArtifactNotFoundError(
            f"{str(path)!r} is a file; expected an artifact directory (config.json + "
            "*.safetensors + README.md) or a Hub repo id"
        )
    if isinstance(path_or_repo_id, Path):
        raise ArtifactNotFoundError(
            f"no directory at {str(path)!r}; expected an artifact directory "
            "(pass a str to name a Hub repo id)"
        )
    return None


def resolve_local_or_hub(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    *,
    token: Token = None,
    cache_dir: str | Path | None = None,
    allow_patterns: Patterns = None,
) -> Path:
    """The directory holding an artifact: a local directory as is, else a Hub snapshot.

    An existing local directory is returned unchanged (``revision`` is then ignored, with a
    warning). Any other string must be a Hub repo id (``"namespace/name"``); its snapshot is
    downloaded (or found in the cache) with ``huggingface_hub.snapshot_download``.

    Args:
        path_or_repo_id: A local directory, or a Hub repo id.
        revision: Branch, tag or commit sha (default: the ``main`` branch).
        token: Hub token (default: ``HF_TOKEN`` or the one saved by ``huggingface-cli login``).
        cache_dir: Hub cache (default: ``HF_HUB_CACHE``, i.e. ``$HF_HOME/hub``).
        allow_patterns: Only fetch repo files matching these glob patterns.

    Returns:
        The local directory (for a repo: ``<cache>/models--ns--name/snapshots/<sha>``). Do not
        write into a snapshot directory: its files are links into the shared cache.

    Raises:
        InvalidRepoIdError: Neither an existing local directory nor a valid repo id.
        ArtifactNotFoundError: A :class:`~pathlib.Path` (or a file) that is no directory.
        HubRepoNotFoundError, HubRevisionNotFoundError, HubAuthError, HubOfflineError,
        HubConnectionError, HubError: The repo could not be fetched (see each message).
    """
    local = _local_directory(path_or_repo_id, revision)
    if local is not None:
        return local
    text = str(path_or_repo_id)
    if _looks_like_path(text):
        raise ArtifactNotFoundError(
            f"no directory at {text!r}; expected an artifact directory (config.json + "
            "*.safetensors + README.md) or a Hub repo id such as 'qdzoo/ant-archive'"
        )
    problem = _repo_id_problem(text)
    if problem is not None:
        raise InvalidRepoIdError(
            f"{text!r} is neither an existing local directory nor a valid Hub repo id "
            f"({problem}); expected the path of an artifact directory or a repo id such as "
            "'qdzoo/ant-archive'"
        )
    try:
        return _snapshot(text, revision, token=token, cache_dir=cache_dir, patterns=allow_patterns)
    except HubRepoNotFoundError as error:
        raise HubRepoNotFoundError(
            f"{error} (There is no local directory {text!r} either.)"
        ) from error.__cause__
    except (HubConnectionError, HubOfflineError) as error:
        raise type(error)(
            f"there is no local directory {text!r} (check the path), and looking it up as a "
            f"Hub repo id failed: {error}"
        ) from error.__cause__


def _snapshot(
    repo_id: str,
    revision: str | None,
    *,
    token: Token,
    cache_dir: str | Path | None,
    patterns: Patterns,
) -> Path:
    """``snapshot_download`` into the cache, with errors translated."""
    from huggingface_hub import snapshot_download

    metadata_timeout, _ = timeouts()
    with _hub_errors(repo_id, revision, cache_dir=cache_dir):
        folder = snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            allow_patterns=_as_patterns(patterns),
            etag_timeout=metadata_timeout,
        )
    return Path(folder)


def resolve_file(
    path_or_repo_id: str | Path,
    filename: str,
    revision: str | None = None,
    *,
    token: Token = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local path of one file of an artifact directory or of a Hub repo.

    Args:
        path_or_repo_id: A local directory, or a Hub repo id.
        filename: ``/``-separated path of the file inside the artifact (e.g. ``"config.json"``).
        revision: Branch, tag or commit sha (default: ``main``); ignored for local directories.
        token: Hub token (default: ``HF_TOKEN`` or the saved one).
        cache_dir: Hub cache (default: ``HF_HUB_CACHE``).

    Raises:
        UnsafeRepoPathError: ``filename`` is absolute or has ``..`` parts.
        HubFileNotFoundError: No such file (locally, or in the repo at that revision).
        Any error of :func:`resolve_local_or_hub`.
    """
    problems = _path_problems(filename)
    if problems:
        raise UnsafeRepoPathError(
            f"invalid file name {filename!r}: {'; '.join(problems)}; expected a relative path "
            "inside the artifact such as 'config.json' or 'vae/config.json'"
        )
    local = _local_directory(path_or_repo_id, revision)
    if local is not None:
        path = local / filename
        if not path.is_file():
            raise HubFileNotFoundError(f"no file {filename!r} in artifact directory {str(local)!r}")
        return path
    repo_id = str(path_or_repo_id)
    check_repo_id(repo_id)
    from huggingface_hub import hf_hub_download

    metadata_timeout, _ = timeouts()
    with _hub_errors(repo_id, revision, filename=filename, cache_dir=cache_dir):
        local_only = not _offline() and not _reachable(
            repo_id, filename, revision, token, metadata_timeout
        )
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                token=token,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
                etag_timeout=metadata_timeout,
                local_files_only=local_only,
            )
        )


def _reachable(
    repo_id: str, filename: str, revision: str | None, token: Token, timeout: float
) -> bool:
    """Whether one metadata request for ``filename`` gets any answer within ``timeout``.

    ``hf_hub_download`` retries a file it has not cached for minutes (60 s per attempt) when
    the Hub does not answer; after this probe fails it is asked for the cached copy only.
    An HTTP error is an answer: ``hf_hub_download`` reports it.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, filename, revision=revision), token=token, timeout=timeout
        )
    except _connection_error_types():
        return False
    except Exception:
        return True
    return True


def _path_problems(name: str) -> list[str]:
    """Why ``name`` is not a relative ``/``-separated path that stays inside its directory."""
    problems = []
    if not name:
        problems.append("it is empty")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        problems.append("it is absolute or uses '\\' or a drive letter")
    if ".." in name.split("/"):
        problems.append("it has a '..' part")
    if "\0" in name:
        problems.append("it contains a NUL character")
    return problems


def _check_repo_path(name: str, repo_id: str) -> None:
    """Raise :class:`UnsafeRepoPathError` if the repo file ``name`` would escape its directory."""
    problems = _path_problems(name)
    if problems:
        raise UnsafeRepoPathError(
            f"refusing file name {name!r} from {repo_id!r}: {'; '.join(problems)}, so it would "
            "be written outside the target directory; this repo cannot be downloaded safely"
        )


def _select(names: list[str], patterns: list[str] | None) -> set[str]:
    """The ``names`` that ``patterns`` select (all of them for ``None``)."""
    from huggingface_hub.utils import filter_repo_objects

    return set(filter_repo_objects(names, allow_patterns=patterns))


def _remote_files(repo_id: str, revision: str | None, token: Token) -> list[str] | None:
    """The file names of ``repo_id`` at ``revision``, or ``None`` if the Hub does not list them.

    ``None`` (offline, unreachable, refused...) leaves the decision to ``snapshot_download``,
    which may still serve the cache or else raises the error that applies.
    """
    from huggingface_hub import HfApi

    if _offline():
        return None
    try:
        with _hub_errors(repo_id, revision):
            # One plain request (the tree listing would retry an unreachable endpoint for ~20 s).
            info = HfApi().repo_info(repo_id, revision=revision, token=token, timeout=timeouts()[0])
    except HubError:
        return None
    return [sibling.rfilename for sibling in info.siblings or []]


def _snapshot_files(
    snapshot: Path, repo_id: str, patterns: list[str] | None
) -> list[tuple[str, Path]]:
    """``(repo path, real file)`` for the selected files of a snapshot, refusing links out.

    Files of a cached snapshot are links into the repo's ``blobs/`` folder; a link is accepted
    only if it ends inside the repo's cache folder (``<cache>/models--ns--name``). A snapshot
    folder may hold more files than ``patterns`` select (from earlier downloads of the same
    commit); only the selected ones are returned.
    """
    snapshot = snapshot.absolute()
    allowed_root = Path(os.path.realpath(snapshot.parent.parent))
    files = []
    for root, dirs, names in os.walk(snapshot):
        for name in dirs:
            if (Path(root) / name).is_symlink():
                relative = (Path(root) / name).relative_to(snapshot).as_posix()
                raise UnsafeRepoPathError(
                    f"refusing {relative!r} from {repo_id!r}: a linked directory in the snapshot"
                )
        for name in names:
            entry = Path(root) / name
            relative = entry.relative_to(snapshot).as_posix()
            _check_repo_path(relative, repo_id)
            real = Path(os.path.realpath(entry))
            if real != allowed_root and allowed_root not in real.parents:
                raise UnsafeRepoPathError(
                    f"refusing {relative!r} from {repo_id!r}: it links to {str(real)!r}, outside "
                    f"the cache folder {str(allowed_root)!r}"
                )
            if not real.is_file():
                raise UnsafeRepoPathError(f"refusing {relative!r} from {repo_id!r}: not a file")
            files.append((relative, real))
    selected = _select([relative for relative, _ in files], patterns)
    return sorted(item for item in files if item[0] in selected)


def download_to(
    repo_id: str,
    out_dir: str | Path,
    revision: str | None = None,
    *,
    token: Token = None,
    cache_dir: str | Path | None = None,
    allow_patterns: Patterns = None,
    overwrite: bool = False,
) -> Path:
    """Download a Hub repo into ``out_dir``, atomically; return ``out_dir``.

    The files are fetched into the Hub cache first (so a later download is instant and offline
    mode works), checked, copied into a temporary directory next to ``out_dir`` and renamed into
    place: after an error or an interruption there is no partial ``out_dir``.

    File names are checked before anything is written: an absolute name, a ``..`` part, or a
    cache entry linking outside the repo's cache folder is refused.

    Args:
        repo_id: ``"namespace/name"``.
        out_dir: Directory to create (its parent is created if needed).
        revision: Branch, tag or commit sha (default: ``main``).
        token: Hub token (default: ``HF_TOKEN`` or the saved one).
        cache_dir: Hub cache (default: ``HF_HUB_CACHE``).
        allow_patterns: Only fetch repo files matching these glob patterns.
        overwrite: Replace an existing ``out_dir`` (swapped in only once the download is
            complete) instead of raising.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is false.
        UnsafeRepoPathError: A file name would escape ``out_dir``.
        Any error of :func:`resolve_local_or_hub`.
    """
    check_repo_id(repo_id)
    out = Path(out_dir).expanduser().absolute()
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"{str(out)!r} already exists; choose a new directory or pass overwrite=True"
        )
    patterns = _as_patterns(allow_patterns)
    listed = _remote_files(repo_id, revision, token) or []
    for name in sorted(_select(listed, patterns)):
        _check_repo_path(name, repo_id)
    snapshot = _snapshot(repo_id, revision, token=token, cache_dir=cache_dir, patterns=patterns)
    files = _snapshot_files(snapshot, repo_id, patterns)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for relative, source in files:
            target = staging.joinpath(*PurePosixPath(relative).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        _move_into_place(staging, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _move_into_place(staging: Path, out: Path, *, overwrite: bool) -> None:
    """Rename the complete ``staging`` directory to ``out`` (swapping out an old ``out``)."""
    if overwrite and (out.exists() or out.is_symlink()):
        old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old")
        os.rename(out, old)
        try:
            os.rename(staging, out)
        except BaseException:
            os.rename(old, out)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
        return
    try:
        os.rename(staging, out)
    except OSError as error:
        if out.exists():
            raise OutputExistsError(
                f"{str(out)!r} appeared while downloading; choose a new directory or pass "
                "overwrite=True"
            ) from error
        raise


# ---------------------------------------------------------------------------------- push


def _check_push_directory(local_dir: Path) -> None:
    """Refuse a missing or empty directory, and links that point outside it."""
    if not local_dir.is_dir():
        raise ArtifactNotFoundError(
            f"no directory at {str(local_dir)!r}; expected the artifact directory to push"
        )
    root = Path(os.path.realpath(local_dir))
    has_file = False
    for path in local_dir.rglob("*"):
        if path.is_symlink():
            real = Path(os.path.realpath(path))
            if root not in real.parents:
                raise UnsafeRepoPathError(
                    f"refusing to push {str(path)!r}: it links to {str(real)!r}, outside "
                    f"{str(local_dir)!r}; copy the file in instead"
                )
        has_file = has_file or path.is_file()
    if not has_file:
        raise ArtifactError(f"{str(local_dir)!r} is empty; nothing to push")


def push_directory(
    local_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: Token = None,
    commit_message: str | None = None,
    revision: str | None = None,
    tag: str | None = None,
) -> str:
    """Upload a directory to a Hub repo as one commit; return the commit sha.

    Creates the repo if needed (``private`` applies only then), creates the branch
    ``revision`` from ``main`` if it does not exist, uploads every file of ``local_dir`` (its
    sub-folders included), and tags the new commit with ``tag`` if given. Files already on the
    Hub and not in ``local_dir`` are left in place. An upload that changes nothing makes no new
    commit; the current head's sha is returned.

    Args:
        local_dir: The artifact directory.
        repo_id: ``"namespace/name"``.
        private: Create the repo as private (an existing repo keeps its visibility).
        token: A token with write access (default: ``HF_TOKEN`` or the saved one).
        commit_message: Summary of the commit (default: ``"Upload <dir name> with qdzoo"``).
        revision: Branch to commit to (default: ``main``).
        tag: Tag to create on the new commit (must not exist yet).

    Raises:
        InvalidRepoIdError: ``repo_id`` is not ``namespace/name``.
        ArtifactNotFoundError, ArtifactError: ``local_dir`` is missing or empty.
        UnsafeRepoPathError: ``local_dir`` holds a link to a file outside it.
        HubAuthError: No token, or one without write access.
        HubOfflineError, HubConnectionError, HubError: The Hub refused or could not be reached.
    """
    check_repo_id(repo_id, namespace_required=True)
    local = Path(local_dir).expanduser()
    _check_push_directory(local)
    from huggingface_hub import HfApi

    api = HfApi()
    message = commit_message or f"Upload {local.resolve().name} with qdzoo"
    with _hub_errors(repo_id, revision, action="push"):
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(local),
            commit_message=message,
            revision=revision,
            token=token,
        )
        sha = commit.oid
    if tag is not None:
        with _hub_errors(repo_id, tag, action="push"):
            try:
                api.create_tag(repo_id, tag=tag, revision=sha, token=token)
            except Exception as error:
                if _status(error) == 409:
                    raise HubError(
                        f"tag {tag!r} already exists in {repo_id!r}; the files were pushed as "
                        f"commit {sha}. Choose a new tag name, or delete the old tag first"
                    ) from error
                raise
    return sha
