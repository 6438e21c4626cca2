"""Training runs: config, progress, metrics log, atomic checkpoints, resume, final artifact.

A run directory ``OUT`` holds the archive artifact (``config.json``, ``archive.safetensors``,
``README.md``, ``heatmap.png``) written at the end, the metrics log ``metrics.jsonl`` (one
JSON object per iteration) and ``checkpoint/`` (``run.json`` + ``state.safetensors``),
rewritten atomically after every chunk. ``resume=True`` continues from the checkpoint and ends
with exactly the archive an uninterrupted run with the same config produces.

A resumed run may change one thing, its budget (``evaluations``): a larger budget continues to
it and ends with the archive of a run started with that budget (the new budget replaces the
stored one in ``checkpoint/run.json``); a budget smaller than what the checkpoint already spent
is refused, and one that the checkpoint has reached finishes at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from models.policy import PolicySpec
from training import distributed
from training.qd import algorithms
from training.qd.loop import (
    QDState,
    evaluations_per_iteration,
    init_state,
    make_chunk,
    make_step,
)
from training.qd.sharding import population_mesh, replicate
from training.rundir import RunDir
from zoo import tasks
from zoo.archive import Archive, cvt_centroids
from zoo.archive_artifact import ArchiveArtifact, archive_config
from zoo.artifact import finite_or_none
from zoo.errors import ArtifactError, ConfigError
from zoo.serialization import dataclass_from_dict, read_json, write_json
from zoo.tasks.base import Task, genome_template

STATE_FILE = "state.safetensors"

RESUMABLE_FIELDS = frozenset({"evaluations"})
"""Fields of :class:`TrainConfig` a resumed run may change (everything else must repeat)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in ``checkpoint/run.json``).

    Attributes:
        task: task name; ``task_kwargs`` its constructor overrides.
        algorithm: algorithm name; ``hyperparameters`` overrides of its defaults.
        evaluations: budget of evaluations actually spent: the run makes
            ``ceil(evaluations / (batch_size + extra))`` iterations, where ``extra`` is what
            the algorithm's emitters evaluate per iteration outside the archive.
        batch_size: genomes evaluated and inserted per iteration (the first batch is random).
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
        if self.cvt_cells is not None and (
            not isinstance(self.cvt_cells, int) or self.cvt_cells < 1
        ):
            raise ConfigError(
                f"cvt_cells (--cvt) must be a positive integer, got {self.cvt_cells!r}"
            )
        if self.cvt_cells is not None and self.cvt_samples < self.cvt_cells:
            raise ConfigError(
                f"{self.cvt_cells} CVT cells need at least as many cvt_samples (k-means places "
                f"each centroid on samples; ~50x more is better), given {self.cvt_samples}: "
                f"raise cvt_samples (--cvt-samples, e.g. {50 * self.cvt_cells}) or ask for "
                "fewer cells"
            )

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
        task_kwargs = dict(config.task_kwargs)
        hidden = (config.policy or {}).get("hidden_sizes")
        valid = isinstance(hidden, list | tuple) and all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
        )
        if valid and tasks.info(config.task).genome == "policy":
            # The task's default policy is the run's, so that an artifact's recorded task
            # kwargs rebuild a task whose default_policy() matches its genomes (invalid sizes
            # are refused below, with the policy's own message).
            task_kwargs.setdefault("policy_hidden_sizes", list(hidden))
        self.task: Task = tasks.make(config.task, **task_kwargs)
        self.hyperparameters = self.algorithm.resolved(self.task, config.hyperparameters)
        spec = self.task.spec
        self.policy: PolicySpec | None = None
        if spec.genome == "policy":
            default = self.task.default_policy()
            assert default is not None
            overrides = dict(config.policy or {})
            try:
                self.policy = PolicySpec.from_dict({**default.to_dict(), **overrides})
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"invalid policy {overrides} for task {config.task!r}: {err}; give hidden "
                    "sizes >= 1 (--hidden 64 64) and the fields of models.PolicySpec"
                ) from None
        self.emitter = self.algorithm.build(self.task, config.batch_size, self.hyperparameters)
        if self.emitter.batch_size != config.batch_size:
            raise ConfigError(
                f"algorithm {config.algorithm!r} built emitters asking "
                f"{self.emitter.batch_size} genomes per iteration for batch_size="
                f"{config.batch_size}; choose a batch size its emitters can split"
            )
        self.evaluations_per_iteration = evaluations_per_iteration(self.emitter)
        self.iterations = max(1, math.ceil(config.evaluations / self.evaluations_per_iteration))
        self.mesh = population_mesh(config.batch_size)
        self.step = make_step(self.task, self.emitter, self.mesh)
        self.chunk = make_chunk(self.step)

    def _seed_keys(self) -> tuple[PRNGKeyArray, PRNGKeyArray]:
        """``(loop key, CVT key)``: every random draw of the run derives from the seed."""
        key, k_cvt = jax.random.split(jax.random.key(self.config.seed))
        return key, k_cvt

    def empty_archive(self) -> Archive:
        """The run's empty archive (a CVT archive's k-means runs here, so call it eagerly:
        not under ``jax.jit`` or ``jax.eval_shape``)."""
        cfg = self.config
        spec = self.task.spec
        _, k_cvt = self._seed_keys()
        lr, tmin = self.algorithm.archive_settings(self.hyperparameters)
        template = genome_template(spec, self.policy)
        common = dict(
            learning_rate=lr,
            threshold_min=tmin,
            qd_offset=spec.qd_offset,
            extras_template=self.emitter.extras_template(spec),
        )
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
        return archive

    def initial_state(self, archive: Archive | None = None) -> QDState:
        """The state before the first iteration, from ``archive`` (default:
        :meth:`empty_archive`). ``jax.eval_shape(lambda: run.initial_state(archive))`` with
        an eagerly built ``archive`` gives the checkpoint's template."""
        if archive is None:
            archive = self.empty_archive()
        key, _ = self._seed_keys()
        state = init_state(self.task, self.emitter, archive, key, self.policy)
        return replicate(state, self.mesh)

    def artifact_config(self, state: QDState, wall_time_s: float) -> dict[str, Any]:
        cfg = self.config
        spec = self.task.spec
        return archive_config(
            spec,
            self.policy,
            state.elites,
            seed=cfg.seed,
            algorithm={
                "name": self.algorithm.name,
                "summary": self.algorithm.summary,
                "hyperparameters": self.hyperparameters,
                "citation": self.algorithm.citation,
            },
            training={
                "evaluations": int(state.iteration) * self.evaluations_per_iteration,
                "iterations": int(state.iteration),
                "batch_size": cfg.batch_size,
                "evaluations_per_iteration": self.evaluations_per_iteration,
                "seed": cfg.seed,
                "wall_time_s": round(wall_time_s, 2),
                "config": cfg.to_dict(),
            },
        )


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

    With ``resume``, ``config`` must equal the stored one (:func:`stored_config`) except for
    ``evaluations``: a new budget replaces the stored one and the run continues (or stops) at
    it, ending with the archive of a run started with that budget.

    Raises:
        OutputExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite``.
        ConfigError: ``resume`` with a config that differs from the stored one other than in
            ``evaluations``, or with a budget below the evaluations the checkpoint spent.
    """
    run_dir = RunDir(out)
    writer = distributed.is_writer()  # only process 0 of a multi-process run writes
    resuming = (
        run_dir.prepare(
            config.to_dict(),
            resume=resume,
            overwrite=overwrite,
            canonical=_compared,
        )
        if writer or not overwrite
        else False
    )
    distributed.barrier("qdzoo-train-prepared")  # every process checked before 0 writes
    bar: tqdm | None = None
    try:
        run = Run(config)
        if resuming and not run_dir.has_checkpoint(STATE_FILE):
            resuming = False  # killed before the first checkpoint: start from the beginning
        if resuming:
            archive = run.empty_archive()
            template = jax.eval_shape(lambda: run.initial_state(archive))
            state = replicate(run_dir.load(STATE_FILE, template), run.mesh)
            iteration = int(state.iteration)
            _check_budget(run, iteration, run_dir)
            if writer:
                run_dir.truncate_log(lambda row: row["iteration"] <= iteration)
                if stored_config(run_dir.path) != config:
                    write_json(run_dir.record_path, config.to_dict())  # the new budget
        else:
            if writer:
                run_dir.start(config.to_dict())
            state = run.initial_state()
        total = run.iterations
        per_iteration = run.evaluations_per_iteration
        start_time = time.time()
        bar = tqdm(
            total=total * per_iteration,
            initial=int(state.iteration) * per_iteration,
            unit="eval",
            disable=not progress,
            dynamic_ncols=True,
            desc=f"{config.algorithm} on {config.task}",
        )
        with run_dir.open_log() if writer else contextlib.nullcontext() as log:
            while (done := int(state.iteration)) < total:
                length = min(config.chunk, total - done)
                try:
                    state, metrics = run.chunk(state, length)
                    host = {
                        k: np.asarray(v)
                        for k, v in jax.device_get(distributed.to_host_local(metrics)).items()
                    }
                except jax.errors.JaxRuntimeError as err:
                    if not distributed.is_multiprocess():
                        raise
                    raise distributed.peer_lost(err, _resume_hint(run_dir)) from None
                if writer:
                    run_dir.write_rows(
                        log,
                        (
                            {
                                k: finite_or_none(v[i]) if v.dtype.kind == "f" else int(v[i])
                                for k, v in host.items()
                            }
                            for i in range(length)
                        ),
                    )
                    run_dir.save(STATE_FILE, distributed.to_host_local(state))
                last = {k: v[-1] for k, v in host.items()}
                bar.update(length * per_iteration)
                bar.set_postfix(progress_postfix(last))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(run_dir.interrupted(_checkpointed(run_dir))) from None
    finally:
        if bar is not None:
            bar.close()
    state = distributed.to_host_local(state)  # each process's own replica
    artifact = ArchiveArtifact(state.elites, run.artifact_config(state, time.time() - start_time))
    if save and writer:
        artifact.save_pretrained(run_dir.path)
    return artifact


def stored_config(out: str | Path) -> TrainConfig | None:
    """The config of the run in directory ``out`` (its ``checkpoint/run.json``), or ``None``
    when there is none (no directory, or a run that never started).

    Raises:
        ArtifactError: the record is unreadable or is not a training config.
    """
    path = RunDir(out).record_path
    if not path.is_file():
        return None
    record = read_json(path)
    try:
        return TrainConfig.from_dict(record)
    except ConfigError as err:
        raise ArtifactError(
            f"{path} is not the record of a `qdzoo train` run ({err}); a distillation resumes "
            "with `qdzoo distill ARCHIVE --out DIR --resume`; otherwise start again with "
            "--overwrite"
        ) from None


def _compared(record: dict[str, Any]) -> dict[str, Any]:
    """A stored or given run record as resuming compares it: parsed (defaults of fields
    added since filled in), without the fields a resumed run may change."""
    d = TrainConfig.from_dict(record).to_dict()
    return {k: v for k, v in d.items() if k not in RESUMABLE_FIELDS}


def _check_budget(run: Run, iteration: int, run_dir: RunDir) -> None:
    """Refuse a resumed budget that ends before the ``iteration`` the checkpoint reached."""
    if run.iterations >= iteration:
        return
    spent = iteration * run.evaluations_per_iteration
    raise ConfigError(
        f"--resume: the run in {run_dir.path} already spent {spent} evaluations ({iteration} "
        f"iterations of {run.evaluations_per_iteration}), more than the budget given, "
        f"--evaluations {run.config.evaluations}; give --evaluations {spent} or more (or leave "
        "it out to keep the stored budget)"
    )


def _resume_hint(run_dir: RunDir) -> str:
    """What to do after a multi-process run lost a process."""
    progress = _checkpointed(run_dir)
    if progress is None:
        return (
            f"Nothing was checkpointed yet: run the same launch with --resume (out {run_dir.path})."
        )
    return (
        f"The last checkpoint in {run_dir.checkpoint_dir} ({progress}) is intact: run the same "
        "launch with --resume to continue."
    )


def _checkpointed(run_dir: RunDir) -> str | None:
    """``"iteration N"`` of the run's checkpoint (``None``: none yet), for messages."""
    try:
        iteration = run_dir.counter(STATE_FILE, "iteration")
    except ArtifactError:
        return "iteration unreadable"
    if iteration is None:
        return None
    return f"iteration {iteration}"


LOOP_METRICS = frozenset(
    {"qd_score", "coverage", "max_fitness", "mean_fitness", "num_elites", "num_nonfinite"}
    | {"iteration", "added", "evaluations"}
)


def progress_postfix(last: dict[str, Any], emitter_metrics: int = 3) -> dict[str, str]:
    """The progress bar's figures: QD score, coverage, max fitness and the first
    ``emitter_metrics`` metrics reported by the emitters (e.g. a critic's loss)."""
    shown = {
        "qd": f"{float(last['qd_score']):.4g}",
        "cov": f"{100 * float(last['coverage']):.1f}%",
        "max": f"{float(last['max_fitness']):.4g}",
    }
    extra = [k for k in last if k not in LOOP_METRICS][:emitter_metrics]
    shown.update({k: f"{float(last[k]):.3g}" for k in extra})
    return shown
