"""Evolution strategies as pure functions over Equinox state pytrees.

Each module (:mod:`~training.es.cma_es`, :mod:`~training.es.sep_cma_es`,
:mod:`~training.es.lm_ma_es`, :mod:`~training.es.openai_es`) exposes the same functions::

    state = init(mean, sigma0, batch_size=lam, lower_bounds=..., upper_bounds=...)
    solutions = ask(key, state)                                   # [lam, n]
    state = tell(state, solutions, ranking_indices, num_parents)  # best first
    if should_restart(state, sorted_ranking_values): ...

No Python control flow depends on array values, so every function can be jitted and
vmapped over many independent ES instances (the ES emitter runs one per emitter).
:data:`BACKENDS` maps the names used by the emitter to the modules.
"""

from __future__ import annotations

from types import ModuleType

from training.es import cma_es, lm_ma_es, openai_es, sep_cma_es

BACKENDS: dict[str, ModuleType] = {
    "cma": cma_es,
    "sep-cma": sep_cma_es,
    "lm-ma": lm_ma_es,
    "openai": openai_es,
}

__all__ = ["BACKENDS", "cma_es", "lm_ma_es", "openai_es", "sep_cma_es"]
