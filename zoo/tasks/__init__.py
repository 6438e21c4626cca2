"""Task registry: ``zoo.tasks.make(name, **overrides)``, ``zoo.tasks.names()`` and
``zoo.tasks.info(name)`` (static facts for listings: nothing is built).

Every task evaluates a batch of genomes (:class:`Task`); the control tasks implement the
episodic protocol (:class:`EpisodicTask`) that :func:`run_episodes` drives. Task modules
are imported lazily so that ``import zoo`` does not pay for Brax.
"""

from __future__ import annotations

import dataclasses
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
    "ant-trap": ("zoo.tasks.deceptive_ant", "AntTrapTask", {}),
    "ant-maze": ("zoo.tasks.deceptive_ant", "AntMazeTask", {}),
    "point-maze": ("zoo.tasks.point_maze", "PointMazeTask", {}),
    "arm": ("zoo.tasks.functions", "ArmTask", {}),
    "lp-sphere": ("zoo.tasks.functions", "LinearProjectionSphereTask", {}),
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a listing shows of a task with its default constructor arguments, known without
    building it (a Brax task's env takes seconds to build). ``tests/test_cli.py`` checks it
    against the built tasks' :class:`TaskSpec`.

    Attributes:
        name: registry name.
        genome: ``"policy"`` or ``"vector"``, as :attr:`TaskSpec.genome`.
        descriptor_names: one name per descriptor dimension, as :attr:`TaskSpec.descriptor_names`.
        episode_length: default steps per episode (1 for benchmark functions).
        reset: default reset protocol, as :attr:`TaskSpec.reset`.
    """

    name: str
    genome: str
    descriptor_names: tuple[str, ...]
    episode_length: int
    reset: str


def _feet(*feet: str) -> tuple[str, ...]:
    return tuple(f"{foot}_contact" for foot in feet)


_FEET = {
    "hopper-uni": ("foot",),
    "walker2d-uni": ("foot", "foot_left"),
    "halfcheetah-uni": ("bfoot", "ffoot"),
    "ant-uni": ("front_left_foot", "front_right_foot", "back_left_foot", "back_right_foot"),
    "humanoid-uni": ("left_shin", "right_shin"),
}
_XY = ("x_position", "y_position")
_INFO: dict[str, TaskInfo] = {
    **{name: TaskInfo(name, "policy", _feet(*feet), 250, "deterministic")
       for name, feet in _FEET.items()},
    "ant-omni": TaskInfo("ant-omni", "policy", _XY, 250, "deterministic"),
    "ant-trap": TaskInfo("ant-trap", "policy", _XY, 250, "deterministic"),
    "ant-maze": TaskInfo("ant-maze", "policy", _XY, 250, "deterministic"),
    "point-maze": TaskInfo("point-maze", "policy", _XY, 100, "deterministic"),
    "arm": TaskInfo("arm", "vector", ("x_end_effector", "y_end_effector"), 1, "deterministic"),
    "lp-sphere": TaskInfo(
        "lp-sphere", "vector", ("projection_first_half", "projection_second_half"), 1,
        "deterministic",
    ),
}  # fmt: skip


def info(name: str) -> TaskInfo:
    """Static facts about task ``name`` (default arguments), without building it.

    Raises:
        UnknownNameError: ``name`` is not a registered task (the message lists them).
    """
    if name not in _INFO:
        raise UnknownNameError("task", name, _REGISTRY)
    return _INFO[name]


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
    "TaskInfo",
    "TaskSpec",
    "Transitions",
    "info",
    "make",
    "names",
    "run_episodes",
]
