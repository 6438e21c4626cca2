"""Helpers for the end-to-end tests of QD algorithms run through ``qdzoo train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from golden_map_elites import archive_digest

from training.cli import main
from training.qd.run import TrainConfig, train
from training.rundir import METRICS_LOG
from zoo.archive_artifact import load_archive


def read_log(out: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics log."""
    return [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]


def train_cli_args(config: TrainConfig) -> list[str]:
    """``qdzoo train`` arguments (without ``--out``) for a grid-archive ``config`` whose task
    kwargs are at most ``episode_length`` and whose policy is at most ``hidden_sizes``."""
    if config.grid is None or set(config.task_kwargs) - {"episode_length"}:
        raise ValueError(f"train_cli_args covers grid runs with an episode length, given {config}")
    if config.policy is not None and set(config.policy) - {"hidden_sizes"}:
        raise ValueError(f"train_cli_args covers policies given by hidden sizes, given {config}")
    args = [
        "train",
        "--task",
        config.task,
        "--algo",
        config.algorithm,
        "--evaluations",
        str(config.evaluations),
        "--batch-size",
        str(config.batch_size),
        "--grid",
        *(str(n) for n in config.grid),
        "--seed",
        str(config.seed),
        "--chunk",
        str(config.chunk),
        "--quiet",
    ]
    if "episode_length" in config.task_kwargs:
        args += ["--episode-length", str(config.task_kwargs["episode_length"])]
    if config.policy is not None:
        args += ["--hidden", *(str(h) for h in config.policy["hidden_sizes"])]
    for name, value in config.hyperparameters.items():
        args += ["--set", f"{name}={json.dumps(value)}"]
    return args


def assert_resume_is_identical(
    config: TrainConfig, full_run: Path, out: Path, *, stop_after: int
) -> None:
    """Train ``config`` with a budget of ``stop_after`` evaluations into ``out``, then
    ``qdzoo train --out OUT --resume --evaluations N`` to the full budget: the archive (extras
    included) and the metrics log must equal those of ``full_run``, ``config`` run at once."""
    partial = TrainConfig(**{**config.to_dict(), "evaluations": stop_after})
    train(partial, out, progress=False, save=False)
    resume = ["train", "--out", str(out), "--resume", "--quiet"]
    assert main([*resume, "--evaluations", str(config.evaluations)]) == 0
    full, resumed = load_archive(full_run).archive, load_archive(out).archive
    assert archive_digest(resumed) == archive_digest(full)
    assert set(resumed.extras) == set(full.extras)
    for name in full.extras:
        np.testing.assert_array_equal(
            np.asarray(resumed.extras[name]), np.asarray(full.extras[name])
        )
    assert read_log(out) == read_log(full_run)
