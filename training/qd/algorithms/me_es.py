"""ME-ES: OpenAI-ES offspring alternating fitness and novelty phases."""

from __future__ import annotations

from typing import Any

from training.qd.algorithms.base import Algorithm, register
from training.qd.emitter import Emitter
from training.qd.emitters.me_es import MEESEmitter
from zoo.tasks.base import Task


def _build_me_es(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    """One ME-ES instance per genome of the batch."""
    return MEESEmitter(
        num_emitters=batch_size,
        descriptor_size=task.spec.descriptor_size,
        samples=int(hp["samples"]),
        sigma=float(hp["sigma"]),
        steps_per_parent=int(hp["steps_per_parent"]),
        learning_rate=float(hp["learning_rate"]),
        l2_coefficient=float(hp["l2_coefficient"]),
        neighbours=int(hp["neighbours"]),
        exploit_cells=int(hp["exploit_cells"]),
        explore_cells=int(hp["explore_cells"]),
        novelty_capacity=int(hp["novelty_capacity"]),
        use_explore=bool(hp["use_explore"]),
    )


ME_ES_CITATION = """@inproceedings{colas2020scaling,
  title={Scaling MAP-Elites to deep neuroevolution},
  author={Colas, C{\\'e}dric and Madhavan, Vashisht and Huizinga, Joost and Clune, Jeff},
  booktitle={Proceedings of the Genetic and Evolutionary Computation Conference},
  pages={67--75},
  year={2020}
}"""


register(
    Algorithm(
        name="me-es",
        summary=(
            "ME-ES: OpenAI-ES offspring (samples evaluations each, outside the archive) "
            "alternating fitness and novelty phases; one ES per genome of the batch"
        ),
        citation=ME_ES_CITATION,
        # QDax's MEESConfig defaults; the novelty buffer keeps the last novelty_capacity
        # offspring descriptors.
        defaults={
            "samples": 1000,
            "sigma": 0.02,
            "steps_per_parent": 10,
            "learning_rate": 0.01,
            "l2_coefficient": 0.0,
            "neighbours": 10,
            "exploit_cells": 2,
            "explore_cells": 5,
            "novelty_capacity": 4096,
            "use_explore": True,
        },
        build=_build_me_es,
    )
)
