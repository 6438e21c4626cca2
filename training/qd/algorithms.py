"""Algorithm registry: each QD algorithm is a set of emitters plus archive settings.

Adding an algorithm means writing its emitter(s) (``training/qd/emitters/``), one
:class:`Algorithm` entry here (or :func:`register` from anywhere) and a recipe, never a copy
of the loop. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from training.qd.emitter import Emitter
from training.qd.emitters.iso_line import IsoLineEmitter
from training.qd.emitters.policy_gradient import PolicyGradientEmitter, resolve_preset
from training.qd.multi_emitter import MultiEmitter, split_batch
from training.td3 import TD3Config
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
    """

    name: str
    summary: str
    citation: str
    defaults: dict[str, Any]
    build: Callable[[Task, int, dict[str, Any]], Emitter]
    archive_learning_rate: str | None = None
    threshold_min: str | None = None

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


def _build_map_elites(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    clip = None
    if task.spec.genome == "vector" and hp["clip"] > 0:
        clip = (-hp["clip"], hp["clip"])
    return IsoLineEmitter(
        size=batch_size, iso_sigma=hp["iso_sigma"], line_sigma=hp["line_sigma"], clip=clip
    )


MAP_ELITES_CITATION = """@inproceedings{vassiliades2018discovering,
  title={Discovering the elite hypervolume by leveraging interspecies correlation},
  author={Vassiliades, Vassilis and Mouret, Jean-Baptiste},
  booktitle={Proceedings of the Genetic and Evolutionary Computation Conference},
  pages={149--156},
  year={2018}
}
@article{mouret2015illuminating,
  title={Illuminating search spaces by mapping elites},
  author={Mouret, Jean-Baptiste and Clune, Jeff},
  journal={arXiv preprint arXiv:1504.04909},
  year={2015}
}"""


def _build_pga_me(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    if task.spec.genome != "policy":
        raise ConfigError(
            f"pga-me trains MLP policies; task {task.spec.name!r} has {task.spec.genome} "
            "genomes. Pick a policy task (e.g. point-maze, walker2d-uni)"
        )
    hp = resolve_preset(hp)
    ga, pg = split_batch(batch_size, (0.5, 0.5))
    learner = TD3Config(
        critic_hidden_sizes=tuple(hp["critic_hidden_sizes"]),
        critic_learning_rate=hp["critic_learning_rate"],
        actor_learning_rate=hp["actor_learning_rate"],
        discount=hp["discount"],
        tau=hp["tau"],
        policy_noise=hp["policy_noise"],
        noise_clip=hp["noise_clip"],
        policy_delay=int(hp["policy_delay"]),
        batch_size=int(hp["transition_batch"]),
    )
    return MultiEmitter(
        [
            IsoLineEmitter(size=ga, iso_sigma=hp["iso_sigma"], line_sigma=hp["line_sigma"]),
            PolicyGradientEmitter(
                size=pg,
                td3_config=learner,
                critic_steps=int(hp["critic_steps"]),
                pg_steps=int(hp["pg_steps"]),
                policy_learning_rate=float(hp["policy_learning_rate"]),
                buffer_size=int(hp["buffer_size"]),
            ),
        ],
        names=("ga", "pg"),
    )


PGA_ME_CITATION = """@inproceedings{nilsson2021policy,
  title={Policy gradient assisted MAP-Elites},
  author={Nilsson, Olle and Cully, Antoine},
  booktitle={Proceedings of the Genetic and Evolutionary Computation Conference},
  pages={866--875},
  year={2021}
}"""

_ALGORITHMS: dict[str, Algorithm] = {
    "map-elites": Algorithm(
        name="map-elites",
        summary="MAP-Elites with Iso+LineDD variation of uniformly sampled elites",
        citation=MAP_ELITES_CITATION,
        defaults={"iso_sigma": 0.005, "line_sigma": 0.05, "clip": 0.0},
        build=_build_map_elites,
    ),
    "pga-me": Algorithm(
        name="pga-me",
        summary="PGA-ME: half Iso+LineDD, half TD3 policy-gradient offspring plus the greedy actor",
        citation=PGA_ME_CITATION,
        # None: taken from the preset ("qdax": 300 critic steps, 100 PG steps, minibatch 256,
        # policy lr 1e-3; "paper": 3000, 150, 100, 5e-3); a value given wins over the preset.
        defaults={
            "preset": "qdax",
            "iso_sigma": 0.005,
            "line_sigma": 0.05,
            "critic_hidden_sizes": [256, 256],
            "critic_learning_rate": 3e-4,
            "actor_learning_rate": 3e-4,
            "discount": 0.99,
            "tau": 0.005,
            "policy_noise": 0.2,
            "noise_clip": 0.5,
            "policy_delay": 2,
            "buffer_size": 1_000_000,
            "critic_steps": None,
            "pg_steps": None,
            "transition_batch": None,
            "policy_learning_rate": None,
        },
        build=_build_pga_me,
    ),
}


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
