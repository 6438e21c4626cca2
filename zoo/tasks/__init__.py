"""Task registry: ``zoo.tasks.make(name, **overrides)`` and ``zoo.tasks.names()``.

Every task evaluates a batch of genomes (:class:`Task`); the control tasks implement the
episodic protocol (:class:`EpisodicTask`) that :func:`run_episodes` drives. Task modules
are imported lazily so that ``import zoo`` does not pay for Brax.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from zoo.errors import ConfigError, UnknownNameError
from zoo.tasks.base import Evaluation, Task, TaskSpec, Transitions
from zoo.tasks.episodes import EpisodeResult, StepFn, run_episodes
from zoo.tasks.protocol import EpisodicTask

# name -> (module, factory, constructor defaults fixed by the name)
_REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "hopper-uni": ("zoo.tasks.locomotion", "FeetContactTask", {"env_name": "hopper"}),
    "walker2d-uni": ("zoo.tasks.locomotion", "FeetContactTask", {"env_name": "walker2d"}),
    "halfcheetah-uni": ("zoo.tasks.locomotion", "FeetContactTask", {"env_name": "halfcheetah"}),
    "ant-uni": ("zoo.tasks.locomotion", "FeetContactTask", {"env_name": "ant"}),
    "humanoid-uni": ("zoo.tasks.locomotion", "FeetContactTask", {"env_name": "humanoid"}),
    "ant-omni": ("zoo.tasks.locomotion", "FinalPositionTask", {"env_name": "ant"}),
    "point-maze": ("zoo.tasks.point_maze", "PointMazeTask", {}),
    "arm": ("zoo.tasks.functions", "ArmTask", {}),
    "lp-sphere": ("zoo.tasks.functions", "LinearProjectionSphereTask", {}),
}


def names() -> list[str]:
    """Every task name ``make`` accepts."""
    return sorted(_REGISTRY)


def make(name: str, **overrides: Any) -> Task:
    """Build the task called ``name``; ``overrides`` replace constructor defaults.

    Raises:
        UnknownNameError: ``name`` is not a registered task (the message lists them).
        ConfigError: an override the task does not accept.
    """
    if name not in _REGISTRY:
        raise UnknownNameError("task", name, _REGISTRY)
    module, factory_name, fixed = _REGISTRY[name]
    factory = getattr(importlib.import_module(module), factory_name)
    params = inspect.signature(factory).parameters
    accepted = {p for p in params if p not in ("self", "name", *fixed)}
    unknown = set(overrides) - accepted
    if unknown:
        raise ConfigError(
            f"task {name!r} does not accept {sorted(unknown)}; valid overrides: {sorted(accepted)}"
        )
    return factory(name=name, **fixed, **overrides)


__all__ = [
    "EpisodeResult",
    "EpisodicTask",
    "Evaluation",
    "StepFn",
    "Task",
    "TaskSpec",
    "Transitions",
    "make",
    "names",
    "run_episodes",
]
