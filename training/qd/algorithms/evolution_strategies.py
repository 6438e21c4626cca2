"""CMA-ME, CMA-MAE and its scalable variants: ES instances ranked by archive improvement."""

from __future__ import annotations

from typing import Any

from training.qd.algorithms.base import Algorithm, fill_instances, register
from training.qd.emitter import Emitter
from training.qd.emitters.evolution_strategy import EvolutionStrategyEmitter
from zoo.errors import ConfigError
from zoo.tasks.base import Task


def resolve_es(task: Task, hp: dict[str, Any]) -> dict[str, Any]:
    """``num_emitters`` and ``sigma0`` left as None: the CMA-MAE paper's 15 and 0.5 on vector
    tasks, the scaled CMA-MAE paper's 5 and 0.02 on policy tasks; ``threshold_min`` left as
    None: the task's lowest fitness (``min_fitness``, else its QD offset, the fitness that
    scores 0)."""
    hp = fill_instances(task, hp, vector=(15, 0.5), policy=(5, 0.02))
    if "threshold_min" in hp and hp["threshold_min"] is None:
        low = task.spec.min_fitness
        hp["threshold_min"] = float(task.spec.qd_offset if low is None else low)
    return hp


def _build_es_emitter(
    task: Task,
    batch_size: int,
    hp: dict[str, Any],
    *,
    name: str,
    es: str,
    options: tuple[tuple[str, Any], ...] = (),
) -> Emitter:
    """An :class:`EvolutionStrategyEmitter` of ``num_emitters`` ES instances that share the
    batch (:func:`resolve_es` fills the defaults that depend on the task)."""
    hp = resolve_es(task, hp)
    num, sigma0 = hp["num_emitters"], hp["sigma0"]
    if num < 1:
        raise ConfigError(f"{name}: num_emitters must be >= 1, given {num}")
    if batch_size % num:
        raise ConfigError(
            f"{name} splits the batch evenly among num_emitters={num} ES instances, so "
            f"--batch-size must be a multiple of {num}; given {batch_size}. Use e.g. "
            f"--batch-size {num * max(2, round(batch_size / num))}, or --set num_emitters=N "
            f"with N dividing {batch_size}"
        )
    low = task.spec.min_fitness
    if "threshold_min" in hp and low is not None and float(hp["threshold_min"]) > low:
        raise ConfigError(
            f"{name}: threshold_min={hp['threshold_min']} is above the lowest fitness of task "
            f"{task.spec.name!r} ({low}); solutions below it never enter the archive. Pass "
            f"--set threshold_min={low} (the task's minimum objective)"
        )
    return EvolutionStrategyEmitter(
        num_emitters=num,
        population=batch_size // num,
        sigma0=sigma0,
        es=es,
        ranker=str(hp["ranker"]),
        selection_rule=str(hp["selection_rule"]),
        restart_rule=str(hp["restart_rule"]),
        es_options=options,
    )


def _build_cma_me(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    options = (("pyribs_rank_one", bool(hp["pyribs_rank_one"])),)
    return _build_es_emitter(task, batch_size, hp, name="cma-me", es="cma", options=options)


def _build_cma_mae(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    options = (("pyribs_rank_one", bool(hp["pyribs_rank_one"])),)
    return _build_es_emitter(task, batch_size, hp, name="cma-mae", es="cma", options=options)


def _build_sep_cma_mae(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    options = (("pyribs_rank_one", bool(hp["pyribs_rank_one"])),)
    return _build_es_emitter(
        task, batch_size, hp, name="sep-cma-mae", es="sep-cma", options=options
    )


def _build_lm_ma_mae(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    return _build_es_emitter(task, batch_size, hp, name="lm-ma-mae", es="lm-ma")


def _build_openai_mae(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    options = (
        ("learning_rate", float(hp["es_learning_rate"])),
        ("l2_coeff", float(hp["l2_coeff"])),
    )
    return _build_es_emitter(task, batch_size, hp, name="openai-mae", es="openai", options=options)


CMA_ME_CITATION = """@inproceedings{fontaine2020covariance,
  title={Covariance matrix adaptation for the rapid illumination of behavior space},
  author={Fontaine, Matthew C and Togelius, Julian and Nikolaidis, Stefanos and Hoover, Amy K},
  booktitle={Proceedings of the 2020 Genetic and Evolutionary Computation Conference},
  pages={94--102},
  year={2020}
}"""

CMA_MAE_CITATION = """@inproceedings{fontaine2023covariance,
  title={Covariance matrix adaptation MAP-annealing},
  author={Fontaine, Matthew and Nikolaidis, Stefanos},
  booktitle={Proceedings of the Genetic and Evolutionary Computation Conference},
  pages={456--465},
  year={2023}
}"""

SCALED_CMA_MAE_CITATION = (
    CMA_MAE_CITATION
    + """
@article{tjanaka2022scaling,
  title={Scaling covariance matrix adaptation MAP-annealing to high-dimensional controllers},
  author={Tjanaka, Bryon and Fontaine, Matthew C and Kalkar, Aniruddha and Nikolaidis, Stefanos},
  journal={arXiv preprint arXiv:2210.02622},
  year={2022}
}"""
)

# Shared by the ES-based algorithms. None: 15 ES of sigma0 0.5 on vector tasks (the CMA-MAE
# paper's LP-sphere / arm setting, batch 15 x 36 = 540), 5 ES of sigma0 0.02 on policy tasks
# (scaled CMA-MAE, batch 5 x 40 = 200); the batch size is split evenly among the ES.
_ES_DEFAULTS: dict[str, Any] = {"num_emitters": None, "sigma0": None}
# CMA-MAE: archive learning rate 0.01 (the paper's; scaled CMA-MAE on policies used 0.001)
# and thresholds starting at the task's lowest fitness (None: resolved from the task, 0 on
# LP-sphere).
_MAE_DEFAULTS: dict[str, Any] = {
    **_ES_DEFAULTS,
    "archive_learning_rate": 0.01,
    "threshold_min": None,
    "ranker": "imp",
    "selection_rule": "mu",
    "restart_rule": "basic",
}


register(
    Algorithm(
        name="cma-me",
        summary="CMA-ME: CMA-ES instances ranked by two-stage archive improvement, "
        "restarted when they add nothing",
        citation=CMA_ME_CITATION,
        defaults={
            **_ES_DEFAULTS,
            "ranker": "2imp",
            "selection_rule": "filter",
            "restart_rule": "no_improvement",
            "pyribs_rank_one": False,
        },
        build=_build_cma_me,
        resolve=resolve_es,
    )
)


register(
    Algorithm(
        name="cma-mae",
        summary="CMA-MAE: CMA-ES instances ranked by improvement over annealed thresholds "
        "(archive learning rate)",
        citation=CMA_MAE_CITATION,
        defaults={**_MAE_DEFAULTS, "pyribs_rank_one": False},
        build=_build_cma_mae,
        resolve=resolve_es,
        archive_learning_rate="archive_learning_rate",
        threshold_min="threshold_min",
    )
)


register(
    Algorithm(
        name="sep-cma-mae",
        summary="CMA-MAE with diagonal-covariance sep-CMA-ES instances (scales to policies)",
        citation=SCALED_CMA_MAE_CITATION,
        defaults={**_MAE_DEFAULTS, "pyribs_rank_one": False},
        build=_build_sep_cma_mae,
        resolve=resolve_es,
        archive_learning_rate="archive_learning_rate",
        threshold_min="threshold_min",
    )
)


register(
    Algorithm(
        name="lm-ma-mae",
        summary="CMA-MAE with limited-memory LM-MA-ES instances (scales to policies)",
        citation=SCALED_CMA_MAE_CITATION,
        defaults=dict(_MAE_DEFAULTS),
        build=_build_lm_ma_mae,
        resolve=resolve_es,
        archive_learning_rate="archive_learning_rate",
        threshold_min="threshold_min",
    )
)


register(
    Algorithm(
        name="openai-mae",
        summary="CMA-MAE with OpenAI-ES instances (mirrored sampling, centred ranks, Adam)",
        citation=SCALED_CMA_MAE_CITATION,
        defaults={**_MAE_DEFAULTS, "es_learning_rate": 0.01, "l2_coeff": 0.005},
        build=_build_openai_mae,
        resolve=resolve_es,
        archive_learning_rate="archive_learning_rate",
        threshold_min="threshold_min",
    )
)
