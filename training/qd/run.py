"""Training runs: config, progress, metrics log, atomic checkpoints, resume, final artifact.

A run directory ``OUT`` holds the archive artifact (``config.json``, ``archive.safetensors``,
``README.md``, ``heatmap.png``) written at the end, the metrics log ``metrics.jsonl`` (one
JSON object per iteration) and ``checkpoint/`` (``run.json`` + ``state.safetensors``),
rewritten atomically after every chunk. ``resume=True`` continues from the checkpoint and ends
with exactly the archive an uninterrupted run with the same config produces.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from models.policy import PolicySpec
from training.qd import algorithms
from training.qd.loop import QDState, init_state, make_chunk, make_step, population_mesh, replicate
from zoo import tasks
from zoo.archive import Archive, cvt_centroids
from zoo.archive_artifact import ArchiveArtifact, archive_spec, finite_or_none, library_versions
from zoo.errors import ArtifactError, ConfigError, OutputExistsError
from zoo.serialization import (
    arrays_to_tree,
    dataclass_from_dict,
    load_arrays,
    read_json,
    save_arrays,
    tree_to_arrays,
    write_json,
)
from zoo.tasks.base import Task, genome_template

CHECKPOINT_DIR = "checkpoint"
RUN_CONFIG = "run.json"
STATE_FILE = "state.safetensors"
METRICS_LOG = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in ``checkpoint/run.json``).

    Attributes:
        task: task name; ``task_kwargs`` its constructor overrides.
        algorithm: algorithm name; ``hyperparameters`` overrides of its defaults.
        evaluations: budget; the run makes ``ceil(evaluations / batch_size)`` iterations.
        batch_size: genomes evaluated per iteration (the first one is random).
        grid: cells per descriptor dimension (grid archive), or
        cvt_cells: number of CVT cells (centroids from ``cvt_samples`` uniform samples).
        policy: hidden sizes and activations of the policy (``None``: the task's default).
        seed: every random draw of the run derives from it.
        chunk: iterations per compiled chunk (progress, log and checkpoint after each).
    """

    task: str
    algorithm: str = "map-elites"
    evaluations: int = 10_000
    batch_size: int = 128
    grid: tuple[int, ...] | None = None
    cvt_cells: int | None = None
    cvt_samples: int = 50_000
    task_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy: dict[str, Any] | None = None
    seed: int = 0
    chunk: int = 10

    def __post_init__(self) -> None:
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(d) for d in self.grid))
        for name in ("evaluations", "batch_size", "chunk", "cvt_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.grid is not None and self.cvt_cells is not None:
            raise ConfigError("give either grid (cells per dimension) or cvt_cells, not both")
        if self.cvt_cells is not None and self.cvt_cells < 1:
            raise ConfigError(f"cvt_cells must be >= 1, got {self.cvt_cells}")

    @property
    def iterations(self) -> int:
        return max(1, math.ceil(self.evaluations / self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid) if self.grid is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, d, "training config")


class Run:
    """A configured run: the task, emitter, compiled chunk and the initial state."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.algorithm = algorithms.get(config.algorithm)
        self.hyperparameters = self.algorithm.hyperparameters(config.hyperparameters)
        self.task: Task = tasks.make(config.task, **config.task_kwargs)
        spec = self.task.spec
        self.policy: PolicySpec | None = None
        if spec.genome == "policy":
            default = self.task.default_policy()
            assert default is not None
            overrides = dict(config.policy or {})
            self.policy = PolicySpec.from_dict({**default.to_dict(), **overrides})
        self.emitter = self.algorithm.build(self.task, config.batch_size, self.hyperparameters)
        self.mesh = population_mesh(config.batch_size)
        self.step = make_step(self.task, self.emitter, self.mesh)
        self.chunk = make_chunk(self.step)

    def initial_state(self) -> QDState:
        cfg = self.config
        spec = self.task.spec
        key = jax.random.key(cfg.seed)
        key, k_cvt = jax.random.split(key)
        lr, tmin = self.algorithm.archive_settings(self.hyperparameters)
        template = genome_template(spec, self.policy)
        common = dict(learning_rate=lr, threshold_min=tmin, qd_offset=spec.qd_offset)
        if cfg.cvt_cells is not None:
            centroids = cvt_centroids(
                k_cvt, cfg.cvt_cells, spec.descriptor_low, spec.descriptor_high, cfg.cvt_samples
            )
            archive = Archive.cvt(
                template, centroids, spec.descriptor_low, spec.descriptor_high, **common
            )
        else:
            dims = cfg.grid or (10,) * spec.descriptor_size
            if len(dims) != spec.descriptor_size:
                raise ConfigError(
                    f"--grid needs one size per descriptor: task {spec.name!r} has "
                    f"{spec.descriptor_size} ({', '.join(spec.descriptor_names)}), got {list(dims)}"
                )
            archive = Archive.grid(
                template, dims, spec.descriptor_low, spec.descriptor_high, **common
            )
        state = init_state(self.task, self.emitter, archive, key, self.policy)
        return replicate(state, self.mesh)

    def artifact_config(self, state: QDState, wall_time_s: float) -> dict[str, Any]:
        cfg = self.config
        spec = self.task.spec
        return {
            "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
            "policy": None if self.policy is None else self.policy.to_dict(),
            "archive": archive_spec(state.archive, spec.descriptor_names),
            "algorithm": {
                "name": self.algorithm.name,
                "summary": self.algorithm.summary,
                "hyperparameters": self.hyperparameters,
                "citation": self.algorithm.citation,
            },
            "training": {
                "evaluations": int(state.iteration) * cfg.batch_size,
                "iterations": int(state.iteration),
                "batch_size": cfg.batch_size,
                "seed": cfg.seed,
                "wall_time_s": round(wall_time_s, 2),
                "config": cfg.to_dict(),
            },
            "evaluation": {
                "reset": spec.reset,
                "episode_length": spec.episode_length,
                "seed": cfg.seed,
            },
            "library_versions": library_versions(),
        }


def _prepare_out_dir(out: Path, config: TrainConfig, resume: bool, overwrite: bool) -> bool:
    """Check the output directory; return True if a checkpoint should be resumed."""
    ckpt = out / CHECKPOINT_DIR
    if resume:
        if not (ckpt / RUN_CONFIG).is_file():
            if out.exists() and any(out.iterdir()):
                raise ArtifactError(
                    f"--resume: {out} has no checkpoint to resume ({ckpt / RUN_CONFIG} missing)"
                )
            return False  # nothing started yet: a fresh run
        stored = TrainConfig.from_dict(read_json(ckpt / RUN_CONFIG))
        if stored != config:
            diff = {
                k: (v, config.to_dict()[k])
                for k, v in stored.to_dict().items()
                if v != config.to_dict()[k]
            }
            raise ConfigError(
                f"--resume: the run in {out} was started with a different config "
                f"(stored vs given: {diff}); resume with the same arguments or use a new --out"
            )
        return True
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out} already exists and is not empty; pass --resume to continue the run in it "
                "or --overwrite to replace it"
            )
        shutil.rmtree(out)
    return False


def _load_checkpoint(out: Path, template: QDState) -> QDState:
    arrays = load_arrays(out / CHECKPOINT_DIR / STATE_FILE)
    return arrays_to_tree(template, arrays)


def _save_checkpoint(out: Path, state: QDState) -> None:
    save_arrays(out / CHECKPOINT_DIR / STATE_FILE, tree_to_arrays(state))


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines past ``iteration`` (written after the last checkpoint of a killed run)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["iteration"] <= iteration
    ]
    path.write_text("".join(line + "\n" for line in kept))


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    save: bool = True,
) -> ArchiveArtifact:
    """Run ``config`` into directory ``out`` and return the final archive artifact.

    Raises:
        OutputExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite``.
        ConfigError: ``resume`` with a config that differs from the stored one.
    """
    out = Path(out)
    resuming = _prepare_out_dir(out, config, resume, overwrite)
    run = Run(config)
    if resuming:
        template = jax.eval_shape(run.initial_state)
        state = replicate(_load_checkpoint(out, template), run.mesh)
        _truncate_log(out / METRICS_LOG, int(state.iteration))
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CHECKPOINT_DIR / RUN_CONFIG, config.to_dict())
        state = run.initial_state()
        (out / METRICS_LOG).unlink(missing_ok=True)
    total = config.iterations
    start_time = time.time()
    bar = tqdm(
        total=total * config.batch_size,
        initial=int(state.iteration) * config.batch_size,
        unit="eval",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"{config.algorithm} on {config.task}",
    )
    try:
        with open(out / METRICS_LOG, "a") as log:
            while (done := int(state.iteration)) < total:
                length = min(config.chunk, total - done)
                state, metrics = run.chunk(state, length)
                host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
                for i in range(length):
                    row = {
                        k: finite_or_none(v[i]) if v.dtype.kind == "f" else int(v[i])
                        for k, v in host.items()
                    }
                    row["evaluations"] = row["iteration"] * config.batch_size
                    log.write(json.dumps(row) + "\n")
                log.flush()
                _save_checkpoint(out, state)
                last = {k: v[-1] for k, v in host.items()}
                bar.update(length * config.batch_size)
                bar.set_postfix(
                    qd=f"{float(last['qd_score']):.4g}",
                    cov=f"{100 * float(last['coverage']):.1f}%",
                    max=f"{float(last['max_fitness']):.4g}",
                )
    except KeyboardInterrupt:
        bar.close()
        raise KeyboardInterrupt(
            f"interrupted at iteration {int(_safe_iteration(out))}; the last checkpoint in "
            f"{out / CHECKPOINT_DIR} is intact: continue with --resume"
        ) from None
    bar.close()
    artifact = ArchiveArtifact(state.archive, run.artifact_config(state, time.time() - start_time))
    if save:
        artifact.save_pretrained(out)
    return artifact


def _safe_iteration(out: Path) -> int:
    try:
        return int(load_arrays(out / CHECKPOINT_DIR / STATE_FILE)["iteration"])
    except Exception:  # noqa: BLE001 - only for the message
        return 0
