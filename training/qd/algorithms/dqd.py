"""Differentiable QD: CMA-MEGA with exact, ES-estimated or TD3-critic gradients."""

from __future__ import annotations

import dataclasses
from typing import Any

from training.qd.algorithms.actor_critic import TD3_DEFAULTS, td3_config
from training.qd.algorithms.base import Algorithm, fill_instances, register
from training.qd.emitter import Emitter
from training.qd.emitters.gradient_arborescence import GradientArborescenceEmitter
from training.qd.emitters.gradients import task_objective
from zoo.errors import ConfigError
from zoo.tasks.base import Task


def resolve_mega(task: Task, hp: dict[str, Any]) -> dict[str, Any]:
    """``num_emitters`` and ``sigma0`` left as None: the CMA-MEGA paper's 15 and 10 on vector
    tasks, 5 and 0.05 on policy tasks."""
    return fill_instances(task, hp, vector=(15, 10.0), policy=(5, 0.05))


def _build_cma_mega(
    task: Task, batch_size: int, hp: dict[str, Any], *, estimate: bool = False
) -> Emitter:
    """A :class:`GradientArborescenceEmitter`; ``num_emitters`` and ``sigma0`` default to the
    CMA-MEGA paper's 15 and 10 on vector tasks and to 5 and 0.05 on policy tasks."""
    name = "cma-mega-es" if estimate else "cma-mega"
    hp = resolve_mega(task, hp)
    num, sigma0 = hp["num_emitters"], hp["sigma0"]
    if num < 1 or batch_size % num or batch_size // num < 3:
        raise ConfigError(
            f"{name} gives each of its num_emitters={num} instances an equal share of the "
            f"batch (its solution point plus at least 2 offspring), so --batch-size must be a "
            f"multiple of {num} and at least {3 * num}; given {batch_size}. Use e.g. "
            f"--batch-size {num * max(3, round(batch_size / num))}"
        )
    return GradientArborescenceEmitter(
        num_emitters=num,
        population=batch_size // num - 1,
        num_coefficients=1 + task.spec.descriptor_size,
        sigma0=sigma0,
        learning_rate=float(hp["learning_rate"]),
        grad_opt=str(hp["grad_opt"]),
        selection_rule=str(hp["selection_rule"]),
        restart_rule=str(hp["restart_rule"]),
        objective=None if estimate else task_objective(task),
        es_samples=int(hp.get("es_samples", 100)),
        es_sigma=float(hp.get("es_sigma", 0.02)),
    )


def _build_cma_mega_es(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    return _build_cma_mega(task, batch_size, hp, estimate=True)


def _build_cma_mega_td3_es(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    if task.spec.genome != "policy":
        raise ConfigError(
            f"cma-mega-td3-es learns a critic of MLP policies; task {task.spec.name!r} has "
            f"{task.spec.genome} genomes. Use cma-mega (exact gradients) on vector tasks"
        )
    emitter = _build_cma_mega(task, batch_size, hp, estimate=True)
    learner = td3_config(hp)
    return dataclasses.replace(
        emitter,
        td3_config=learner,
        critic_steps=int(hp["critic_steps"]),
        buffer_size=int(hp["buffer_size"]),
    )


CMA_MEGA_CITATION = """@inproceedings{fontaine2021differentiable,
  title={Differentiable Quality Diversity},
  author={Fontaine, Matthew C and Nikolaidis, Stefanos},
  booktitle={Advances in Neural Information Processing Systems},
  volume={34},
  year={2021}
}"""

CMA_MEGA_ES_CITATION = (
    CMA_MEGA_CITATION
    + """
@inproceedings{tjanaka2022approximating,
  title={Approximating gradients for differentiable quality diversity in reinforcement learning},
  author={Tjanaka, Bryon and Fontaine, Matthew C and Togelius, Julian and Nikolaidis, Stefanos},
  booktitle={Proceedings of the Genetic and Evolutionary Computation Conference},
  pages={1102--1111},
  year={2022}
}"""
)

# None: 15 instances of sigma0 10 on vector tasks (the CMA-MEGA paper's LP-sphere / arm
# setting, batch 15 x 36 = 540 with each instance's solution point), 5 of sigma0 0.05 on
# policy tasks. Gradient ascent with learning rate 1 on unit-normalised gradients, half of
# the offspring as parents, restart when none of an instance's offspring enters the archive.
_MEGA_DEFAULTS: dict[str, Any] = {
    "num_emitters": None,
    "sigma0": None,
    "learning_rate": 1.0,
    "grad_opt": "gradient_ascent",
    "selection_rule": "mu",
    "restart_rule": "no_improvement",
}


register(
    Algorithm(
        name="cma-mega",
        summary="CMA-MEGA: gradient arborescence with exact fitness and descriptor gradients",
        citation=CMA_MEGA_CITATION,
        defaults=dict(_MEGA_DEFAULTS),
        build=_build_cma_mega,
        resolve=resolve_mega,
    )
)


register(
    Algorithm(
        name="cma-mega-es",
        summary=(
            "CMA-MEGA (ES): gradient arborescence with OpenAI-ES estimated gradients "
            "(es_samples mirrored evaluations per instance, outside the archive)"
        ),
        citation=CMA_MEGA_ES_CITATION,
        defaults={**_MEGA_DEFAULTS, "es_samples": 100, "es_sigma": 0.02},
        build=_build_cma_mega_es,
        resolve=resolve_mega,
    )
)


register(
    Algorithm(
        name="cma-mega-td3-es",
        summary=(
            "CMA-MEGA (TD3, ES): gradient arborescence with the fitness gradient of a TD3 "
            "critic and OpenAI-ES estimated descriptor gradients"
        ),
        citation=CMA_MEGA_ES_CITATION,
        # The TD3 settings of PGA-ME's QDax preset; the critic trains on the transitions of
        # every batch the archive sees.
        defaults={
            **_MEGA_DEFAULTS,
            "es_samples": 100,
            "es_sigma": 0.02,
            **TD3_DEFAULTS,
            "transition_batch": 256,
            "critic_steps": 300,
        },
        build=_build_cma_mega_td3_es,
        resolve=resolve_mega,
    )
)
