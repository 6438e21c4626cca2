"""The :class:`Algorithm` record and the registry of algorithms by name."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from training.qd.emitter import Emitter
from zoo.errors import ConfigError, UnknownNameError
from zoo.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A named QD algorithm.

    Attributes:
        name: registry name (``--algo``).
        summary: one line for listings and model cards.
        citation: BibTeX of the paper that introduced it.
        defaults: hyperparameters and their default values (overridable by name).
        build: ``(task, batch_size, hyperparameters) -> Emitter``.
        archive_learning_rate: key in ``defaults`` giving the archive learning rate, or None
            for 1.0 (elitist MAP-Elites archive).
        threshold_min: key in ``defaults`` giving the archive's minimum threshold, or None
            for -inf.
        resolve: ``(task, hyperparameters) -> hyperparameters`` filling the values left as
            ``None`` that depend on the task (per-genome defaults, presets, the task's lowest
            fitness); the run builds with, and records, the resolved values.
    """

    name: str
    summary: str
    citation: str
    defaults: dict[str, Any]
    build: Callable[[Task, int, dict[str, Any]], Emitter]
    archive_learning_rate: str | None = None
    threshold_min: str | None = None
    resolve: Callable[[Task, dict[str, Any]], dict[str, Any]] | None = None

    def hyperparameters(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; unknown names raise ConfigError."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ConfigError(
                f"algorithm {self.name!r} has no hyperparameter {sorted(unknown)}; "
                f"valid: {sorted(self.defaults)}"
            )
        merged = dict(self.defaults)
        for k, v in overrides.items():
            default = self.defaults[k]
            try:
                merged[k] = type(default)(v) if default is not None else v
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"hyperparameter {k}={v!r} of {self.name!r}: expected a "
                    f"{type(default).__name__} like {default!r}"
                ) from err
        return merged

    def resolved(self, task: Task, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`hyperparameters` with the task-dependent values filled in (``resolve``)."""
        hyperparameters = self.hyperparameters(overrides)
        return hyperparameters if self.resolve is None else self.resolve(task, hyperparameters)

    def archive_settings(self, hyperparameters: dict[str, Any]) -> tuple[float, float]:
        """``(learning_rate, threshold_min)`` of the archive this algorithm fills."""
        lr = (
            1.0
            if self.archive_learning_rate is None
            else float(hyperparameters[self.archive_learning_rate])
        )
        tmin = (
            -math.inf if self.threshold_min is None else float(hyperparameters[self.threshold_min])
        )
        return lr, tmin


def fill_instances(
    task: Task,
    hyperparameters: dict[str, Any],
    *,
    vector: tuple[int, float],
    policy: tuple[int, float],
) -> dict[str, Any]:
    """``num_emitters`` and ``sigma0`` of an algorithm of independent ES-like instances: the
    values left as None become ``vector`` or ``policy`` (``(num_emitters, sigma0)``) by the
    task's genome kind, and both are checked to be an integer and a number."""
    hp = dict(hyperparameters)
    num, sigma0 = policy if task.spec.genome == "policy" else vector
    if hp.get("num_emitters") is None:
        hp["num_emitters"] = num
    if hp.get("sigma0") is None:
        hp["sigma0"] = sigma0
    try:
        hp["num_emitters"], hp["sigma0"] = int(hp["num_emitters"]), float(hp["sigma0"])
    except (TypeError, ValueError):
        raise ConfigError(
            f"num_emitters must be an integer and sigma0 a number, given "
            f"num_emitters={hp['num_emitters']!r}, sigma0={hp['sigma0']!r}"
        ) from None
    return hp


_ALGORITHMS: dict[str, Algorithm] = {}


def register(algorithm: Algorithm, *, replace: bool = False) -> Algorithm:
    """Make ``algorithm`` available by name (``qdzoo train --algo NAME``).

    Raises:
        ConfigError: the name is taken and ``replace`` is False.
    """
    if algorithm.name in _ALGORITHMS and not replace:
        raise ConfigError(
            f"an algorithm named {algorithm.name!r} is already registered; pick another name "
            "or pass replace=True"
        )
    _ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def names() -> list[str]:
    return sorted(_ALGORITHMS)


def get(name: str) -> Algorithm:
    if name not in _ALGORITHMS:
        raise UnknownNameError("algorithm", name, _ALGORITHMS)
    return _ALGORITHMS[name]
