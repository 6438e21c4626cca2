"""Learning curves for the benchmark scripts: a run's elitist-archive metrics after every
chunk, and the record at a given number of evaluations."""

from __future__ import annotations

from typing import Any


def metric_history(run: Any, state: Any) -> tuple[Any, list[dict[str, float]]]:
    """Run every iteration of ``run`` (a :class:`training.qd.run.Run`) from ``state``, chunk
    by chunk, with no run directory: the final state and the elitist archive's metrics after
    each chunk, with the ``evaluations`` spent so far."""
    history: list[dict[str, float]] = []
    done = 0
    while done < run.iterations:
        length = min(run.config.chunk, run.iterations - done)
        state, _ = run.chunk(state, length)
        done += length
        metrics = {k: float(v) for k, v in state.elites.metrics().items()}
        metrics["evaluations"] = done * run.evaluations_per_iteration
        history.append(metrics)
    return state, history


def at(history: list[dict], evaluations: float) -> dict:
    """The last record with at most ``evaluations`` spent (the first if none)."""
    kept = [h for h in history if h["evaluations"] <= evaluations + 1e-9]
    return kept[-1] if kept else history[0]
