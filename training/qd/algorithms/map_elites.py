"""MAP-Elites: Iso+LineDD variation of uniformly sampled elites."""

from __future__ import annotations

from typing import Any

from training.qd.algorithms.base import Algorithm, register
from training.qd.emitter import Emitter
from training.qd.emitters.iso_line import IsoLineEmitter
from zoo.tasks.base import Task


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


register(
    Algorithm(
        name="map-elites",
        summary="MAP-Elites with Iso+LineDD variation of uniformly sampled elites",
        citation=MAP_ELITES_CITATION,
        defaults={"iso_sigma": 0.005, "line_sigma": 0.05, "clip": 0.0},
        build=_build_map_elites,
    )
)
