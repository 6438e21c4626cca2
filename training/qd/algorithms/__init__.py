"""Algorithm registry: each QD algorithm is a set of emitters plus archive settings.

Adding an algorithm means writing its emitter(s) (``training/qd/emitters/``), one
:class:`Algorithm` registered with :func:`register` (one module here per family, or from
anywhere) and a recipe, never a copy of the loop. See docs/ARCHITECTURE.md.
"""

from training.qd.algorithms import (  # noqa: F401  (each module registers its algorithms)
    actor_critic,
    ascii_me,
    dqd,
    evolution_strategies,
    map_elites,
    me_es,
    model_based,
)
from training.qd.algorithms.base import Algorithm, get, names, register

__all__ = ["Algorithm", "get", "names", "register"]
