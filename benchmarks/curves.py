"""Learning curves for the benchmark scripts: a run's elitist-archive metrics after every
chunk, the record at a given number of evaluations, and a cache of finished runs' curves so
that an interrupted or extended benchmark reruns only what it lacks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
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


def cached_curve(
    cache: Path | None, config: Any, compute: Callable[[], tuple[list[dict], float]]
) -> tuple[list[dict], float]:
    """``compute()`` (a run's curve and wall seconds) for ``config`` (a
    :class:`training.config.TrainConfig`), read from ``cache`` when a run of the same config
    finished before, and written there (atomically) when it is computed. ``cache=None``
    always computes. The file is named by the algorithm, the seed and a hash of the whole
    config, so a changed hyperparameter, budget or chunk never reads a stale curve."""
    if cache is None:
        return compute()
    fields = json.dumps(config.to_dict(), sort_keys=True, default=str)
    digest = hashlib.sha256(fields.encode()).hexdigest()[:16]
    path = Path(cache) / f"{config.algorithm}-seed{config.seed}-{digest}.json"
    if path.is_file():
        record = json.loads(path.read_text())
        return record["history"], record["wall_s"]
    history, wall = compute()
    from zoo.serialization import write_json

    write_json(path, {"config": json.loads(fields), "history": history, "wall_s": wall})
    return history, wall
