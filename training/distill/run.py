"""Distil an archive of policies into a :class:`~zoo.generator.Generator`.

Two phases, each a sequence of compiled chunks (``lax.scan`` over ``chunk`` optimiser steps,
:mod:`training.fit`): the policy VAE on the archive's elites
(:mod:`training.distill.vae`), then a latent denoiser conditioned on the elites' measures
(:mod:`training.distill.diffusion`). With ``archive_basis`` the decoder's basis heads (and
the encoder's matching projections) start from the archive's principal directions, per
layer: the VAE then starts close to a PCA of the archive and training refines it, which
matters because a walker's gait changes under parameter errors of a few percent of the
archive's spread.

A run directory ``OUT`` (:class:`training.rundir.RunDir`) ends up holding the generator
artifact (``config.json``, ``vae/``, ``denoiser/``, ``condition_encoder/``, ``README.md``),
the log ``metrics.jsonl`` (one JSON object per chunk: phase, step, mean training losses, and
evaluation metrics every ``eval_every`` steps) and ``checkpoint/`` (``run.json``,
``vae.safetensors``, ``diffusion.safetensors``: parameters, optimiser state and step of each
phase), rewritten atomically after every chunk. Step ``s`` of a phase draws its randomness
from ``fold_in(key(seed) split per phase, s)``, so ``resume=True`` reproduces the
uninterrupted run exactly, whatever chunk it was stopped at.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree
from tqdm.auto import tqdm

from models.diffusion import cosine_schedule
from models.policy import PolicySpec
from training import fit
from training.distill.config import DistillConfig
from training.distill.diffusion import (
    DIFFUSION_EVALUATION_ROWS,
    DiffusionSettings,
    diffusion_chunk,
    evaluate_diffusion,
    init_diffusion,
    scaled_latents,
)
from training.distill.vae import (
    VAESettings,
    collect_states,
    evaluate_vae,
    evaluation_subset,
    init_vae,
    vae_chunk,
)
from training.rundir import RunDir
from zoo.archive_artifact import ArchiveArtifact
from zoo.artifact import finite_or_none, library_versions
from zoo.errors import ArtifactError, ConfigError, NonFiniteError, TaskMismatchError
from zoo.generator import Generator, measure_encoder_config

__all__ = ["archive_fingerprint", "distill"]

VAE_STATE = "vae.safetensors"
DIFFUSION_STATE = "diffusion.safetensors"
RECORD_PARTS = {
    "config": "config",
    "archive": "archive (its elites differ)",
    "init": "initial generator",
}
"""The parts of the run record a resumed run must repeat, as the refusal names them (the
architecture follows from the config and ``init``)."""

INIT_KEY_IMPL = "unsafe_rbg"
"""PRNG implementation of the keys that initialise the weights (from ``seed``): building a
model draws one random tensor per parameter, and this generator compiles those draws several
times faster than threefry on CPU. Training randomness uses the default (threefry) keys."""


def distill(
    archive: ArchiveArtifact,
    config: DistillConfig,
    out: str | Path,
    *,
    init: Generator | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    source: str | None = None,
) -> Generator:
    """Distil ``archive`` into a generator saved in ``out``; return it.

    Args:
        archive: an archive of MLP policies (at least 2 elites).
        config: the run's settings.
        out: run directory (artifact, ``metrics.jsonl``, ``checkpoint/``).
        init: warm start: begin from this generator's weights (its architecture, and its
            archive-normalisation choice, replace those of ``config``; archive statistics
            and ``latent_scale`` are recomputed on ``archive``). Needs the same policy spec
            and descriptor count.
        resume: continue the run in ``out`` from its checkpoint (same config, archive and
            ``init``); the result equals the uninterrupted run's.
        overwrite: replace a non-empty ``out``.
        progress: show progress bars.
        source: how the archive was named (catalog name, repo id or path), for the config.

    Raises:
        OutputExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite``.
        ConfigError: ``resume`` with another config, archive or ``init``; an archive of
            vector genomes or with fewer than 2 elites; ``init`` with another measure count.
        TaskMismatchError: ``init`` emits policies of another spec.
    """
    run_dir = RunDir(out, kind="distillation")
    spec = _check_archive(archive)
    if init is not None:
        _check_init(init, spec, archive)
    vae_config, denoiser_config, encoder_config = _architecture(archive, config, init)
    record = {
        "config": config.to_dict(),
        "architecture": {
            "vae": vae_config,
            "denoiser": denoiser_config,
            "condition_encoder": encoder_config,
        },
        "archive": archive_fingerprint(archive),
        "init": None if init is None else _generator_fingerprint(init),
    }
    resuming = run_dir.prepare(record, resume=resume, overwrite=overwrite, parts=RECORD_PARTS)
    if not resuming:
        run_dir.start(record)
    started = time.time()

    # --- data ---------------------------------------------------------------------------
    cells = archive.elite_indices()
    elites = archive.genomes(cells)
    a = archive.archive
    low, high = np.asarray(a.low, np.float64), np.asarray(a.high, np.float64)
    descriptors = np.asarray(a.descriptors, np.float64)[cells]
    conditions = jnp.asarray(np.clip((descriptors - low) / (high - low), 0.0, 1.0), jnp.float32)
    states = None
    if config.behaviour_weight > 0:
        states = jnp.asarray(collect_states(archive, elites, config.seed))
    evaluation_elites = evaluation_subset(elites, config.seed)

    k_vae, k_diffusion, k_evaluation = jax.random.split(jax.random.key(config.seed), 3)
    k_vae_init, k_diffusion_init = jax.random.split(jax.random.key(config.seed, impl=INIT_KEY_IMPL))

    # --- models -------------------------------------------------------------------------
    normalisation = vae_config["archive_normalisation"]
    if init is not None:
        vae = init.vae
        if normalisation:
            vae = vae.with_archive_statistics(elites)
    else:
        vae = init_vae(spec, tuple(sorted(vae_config.items())), k_vae_init)
        if normalisation:
            vae = vae.with_archive_statistics(elites)
        if config.archive_basis:
            vae = vae.with_archive_basis(elites)
    if resuming:
        last = {
            "vae": run_dir.counter(VAE_STATE, "step") or 0,
            "diffusion": run_dir.counter(DIFFUSION_STATE, "step") or 0,
        }
        run_dir.truncate_log(lambda row: row["step"] <= last.get(row["phase"], 0))

    final: dict[str, Any] = {}
    try:
        with run_dir.open_log() as log:
            # --- phase 1: VAE -----------------------------------------------------------
            vae_settings = VAESettings.from_config(config)
            params, static = eqx.partition(vae, vae.trainable_filter())
            params, vae_evaluation = _run_phase(
                "vae", config, run_dir, resuming, progress, log, vae_settings.optimiser, params,
                lambda p, s, start, stop: vae_chunk(
                    p, static, s, elites, states, k_vae, start, stop, vae_settings
                ),
                lambda p: evaluate_vae(eqx.combine(p, static), evaluation_elites, states),
            )  # fmt: skip
            vae = eqx.combine(params, static)
            if vae_evaluation:
                final["vae"] = vae_evaluation

            # --- phase 2: latent diffusion ----------------------------------------------
            latents = scaled_latents(vae, elites)
            schedule = cosine_schedule(config.num_timesteps)
            if init is not None:
                model = (init.denoiser, init.measure_encoder)
            else:
                model = init_diffusion(
                    tuple(sorted(denoiser_config.items())),
                    tuple(sorted(encoder_config.items())),
                    k_diffusion_init,
                )
            diffusion_settings = DiffusionSettings.from_config(config)
            d_params, d_static = eqx.partition(model, eqx.is_inexact_array)
            repeats = max(1, DIFFUSION_EVALUATION_ROWS // cells.size)
            evaluation_latents = jnp.tile(latents.latents, (repeats, 1))
            evaluation_conditions = jnp.tile(conditions, (repeats, 1))
            d_params, diffusion_evaluation = _run_phase(
                "diffusion", config, run_dir, resuming, progress, log,
                diffusion_settings.optimiser, d_params,
                lambda p, s, start, stop: diffusion_chunk(
                    p, d_static, s, latents.latents, conditions, schedule, k_diffusion, start,
                    stop, diffusion_settings,
                ),
                lambda p: evaluate_diffusion(
                    *eqx.combine(p, d_static), evaluation_latents, evaluation_conditions,
                    schedule, k_evaluation,
                ),
            )  # fmt: skip
            if diffusion_evaluation:
                final["diffusion"] = diffusion_evaluation
    except KeyboardInterrupt:
        raise KeyboardInterrupt(run_dir.interrupted(_checkpointed(run_dir))) from None
    denoiser, encoder = eqx.combine(d_params, d_static)
    training = {
        "vae_steps": config.vae_steps,
        "diffusion_steps": config.diffusion_steps,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "condition_dropout": config.condition_dropout,
        "wall_time_s": round(time.time() - started, 2),
        "latent_std": latents.latent_std,
        "final": final,
        "init": None if init is None else {
            "fingerprint": record["init"],
            "path": None if init.path is None else str(init.path),
            "source_archive": init.config.get("source_archive", {}).get("name"),
        },
        "config": config.to_dict(),
    }  # fmt: skip
    generator_config = _generator_config(
        archive, spec, config, latents.clip_x0, training, record["archive"], source
    )
    generator = Generator(vae, denoiser, encoder, schedule, latents.latent_scale, generator_config)
    generator.save_pretrained(run_dir.path)
    return generator


def _architecture(
    archive: ArchiveArtifact, config: DistillConfig, init: Generator | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The VAE (``archive_normalisation`` included), denoiser and measure-encoder
    constructor arguments of the run: ``init``'s, else the config's fitted to the archive."""
    if init is not None:
        vae_config = dict(init.vae.config)
        denoiser_config = init.denoiser.config
        encoder_config = measure_encoder_config(init.measure_encoder)
        normalisation = bool(vae_config.pop("archive_normalisation"))
    else:
        vae_config = dict(config.vae)
        normalisation = config.archive_normalisation
        encoder_config = {
            **config.condition_encoder,
            "measure_size": archive.archive.descriptor_size,
        }
        denoiser_config = {
            **config.denoiser,
            "latent_size": vae_config["latent_size"],
            "condition_size": encoder_config["token_size"],
            "num_condition_tokens": encoder_config["num_tokens"],
        }
    vae_config = {
        **{k: tuple(v) if isinstance(v, list) else v for k, v in vae_config.items()},
        "archive_normalisation": normalisation,
    }
    return vae_config, denoiser_config, encoder_config


def _generator_config(
    archive: ArchiveArtifact,
    spec: PolicySpec,
    config: DistillConfig,
    clip_x0: float,
    training: dict[str, Any],
    fingerprint: str,
    source: str | None,
) -> dict[str, Any]:
    """The generator artifact's config (its modules' configs aside)."""
    archive_config = archive.config
    a = archive.archive
    count = int(archive.elite_indices().size)
    return {
        "task": archive_config["task"],
        "policy": spec.to_dict(),
        "descriptors": {
            "names": list(
                archive_config["archive"].get("descriptor_names")
                or archive_config["task"]["spec"]["descriptor_names"]
            ),
            "low": [float(x) for x in np.asarray(a.low, np.float64)],
            "high": [float(x) for x in np.asarray(a.high, np.float64)],
        },
        "diffusion": {
            "schedule": "cosine",
            "num_timesteps": config.num_timesteps,
            "clip_x0": clip_x0,
        },
        "training": training,
        "source_archive": {
            "name": source,
            "task": archive_config["task"]["name"],
            "algorithm": archive_config.get("algorithm", {}).get("name"),
            "recipe": archive_config.get("recipe"),
            "num_elites": count,
            "num_cells": int(a.num_cells),
            "num_parameters": count * spec.num_parameters,
            "fingerprint": fingerprint,
            "metrics": archive_config.get("metrics") or archive.metrics(),
            "evaluation": archive_config.get("evaluation"),
        },
        "library_versions": library_versions(),
    }


def _run_phase(
    phase: str,
    config: DistillConfig,
    run_dir: RunDir,
    resuming: bool,
    progress: bool,
    log: IO[str],
    optimiser: fit.OptimiserConfig,
    params: PyTree,
    chunk_fn: Callable[[PyTree, PyTree, Array, Array], tuple[PyTree, PyTree, Any, Array]],
    evaluate_fn: Callable[[PyTree], dict[str, Array]],
) -> tuple[PyTree, dict[str, float]]:
    """Run one phase (``"vae"`` or ``"diffusion"``) from its checkpoint (when ``resuming``)
    or its start to ``config.<phase>_steps``: chunks, log rows, checkpoints, progress.
    Returns the trained ``params`` and the last evaluation (``{}`` for a phase of 0 steps)."""
    total = getattr(config, f"{phase}_steps")
    name = VAE_STATE if phase == "vae" else DIFFUSION_STATE
    opt_state = fit.optimiser(optimiser).init(params)
    step = 0
    if resuming and run_dir.has_checkpoint(name):
        params, opt_state, step = _load_phase(run_dir, name, params, opt_state)
    stop = jnp.asarray(total, jnp.int32)
    bar = tqdm(
        total=total,
        initial=step,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        desc="policy VAE" if phase == "vae" else "latent diffusion",
    )
    evaluation: dict[str, float] = {}
    try:
        for end in _chunk_ends(step, total, config.chunk):
            params, opt_state, metrics, taken = chunk_fn(
                params, opt_state, jnp.asarray(step, jnp.int32), stop
            )
            train = _host(metrics, taken)
            if not all(math.isfinite(v) for v in train.values()):
                raise NonFiniteError(
                    f"the {phase} losses became NaN or infinite between steps {step} and {end} "
                    f"({train}); lower the learning rate ({phase}_lr) or the gradient clipping "
                    f"(grad_clip), then start again or --resume from step {step}"
                )
            evaluated: dict[str, float] = {}
            if end == total or end // config.eval_every > step // config.eval_every:
                evaluated = {k: float(v) for k, v in evaluate_fn(params).items()}
                evaluation = evaluated
            RunDir.write_rows(log, [_log_row(phase, end, train, evaluated)])
            state = {"step": jnp.asarray(end, jnp.int32), "params": params, "opt_state": opt_state}
            run_dir.save(name, state)
            bar.update(end - step)
            step = end
            bar.set_postfix({k: f"{v:.4g}" for k, v in {**train, **evaluated}.items()})
    finally:
        bar.close()
    if not evaluation and total > 0:  # resumed after the phase ended: evaluate its result
        evaluation = {k: float(v) for k, v in evaluate_fn(params).items()}
    return params, evaluation


def _load_phase(
    run_dir: RunDir, name: str, params: PyTree, opt_state: PyTree
) -> tuple[PyTree, PyTree, int]:
    """The checkpointed parameters, optimiser state and step of a phase."""
    shape = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    template = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": jax.tree_util.tree_map(shape, params),
        "opt_state": jax.tree_util.tree_map(shape, opt_state),
    }
    state = run_dir.load(name, template)
    return state["params"], state["opt_state"], int(state["step"])


def _checkpointed(run_dir: RunDir) -> str | None:
    """``"vae step 300"`` (and the diffusion step) of the checkpoints, for messages;
    ``None`` when nothing was checkpointed yet."""
    steps = []
    for phase, name in (("vae", VAE_STATE), ("diffusion", DIFFUSION_STATE)):
        try:
            step = run_dir.counter(name, "step")
        except ArtifactError:
            steps.append(f"{phase} step unreadable")
            continue
        if step is not None:
            steps.append(f"{phase} step {step}")
    return ", ".join(steps) or None


def _chunk_ends(start: int, total: int, chunk: int) -> list[int]:
    return list(range(start + chunk, total, chunk)) + [total] if start < total else []


def _host(metrics: dict[str, Array], taken: Array) -> dict[str, float]:
    """Means of the per-step metrics over the steps taken."""
    mask = np.asarray(taken)
    return {k: float(np.asarray(v)[mask].mean()) for k, v in metrics.items()}


def _log_row(
    phase: str, step: int, train: dict[str, float], evaluation: dict[str, Any]
) -> dict[str, Any]:
    """The log row of a chunk: phase, step, training means, ``eval_``-prefixed evaluation."""
    row: dict[str, Any] = {"phase": phase, "step": step}
    row.update({k: finite_or_none(v) for k, v in train.items()})
    row.update({f"eval_{k}": finite_or_none(float(v)) for k, v in evaluation.items()})
    return row


def _check_archive(archive: ArchiveArtifact) -> PolicySpec:
    spec = archive.policy_spec
    if spec is None:
        raise ConfigError(
            f"generators are distilled from archives of policies; this "
            f"{archive.config['task']['name']!r} archive holds vector genomes"
        )
    if archive.elite_indices().size < 2:
        raise ConfigError(
            f"the archive has {archive.elite_indices().size} elite(s); distillation needs at "
            "least 2"
        )
    cells = archive.elite_indices()
    stored = {"fitness": archive.archive.fitness, "descriptors": archive.archive.descriptors}
    for path, leaf in jax.tree_util.tree_flatten_with_path(archive.archive.genomes)[0]:
        stored["genomes" + jax.tree_util.keystr(path)] = leaf
    for name, values in stored.items():
        rows = np.asarray(values)[cells].reshape(cells.size, -1)
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            raise NonFiniteError(
                f"the archive's {name} are NaN or infinite for {bad.size} elite(s) (cells "
                f"{cells[bad][:10].tolist()}); distillation needs finite elites: re-train or "
                "re-evaluate the archive, or drop those cells"
            )
    return spec


def _check_init(init: Generator, spec: PolicySpec, archive: ArchiveArtifact) -> None:
    if init.policy_spec != spec:
        raise TaskMismatchError(
            f"the initial generator emits policies {init.policy_spec.to_dict()} (task "
            f"{init.config['task']['name']!r}) but the archive holds {spec.to_dict()} (task "
            f"{archive.config['task']['name']!r}); warm starts need the same policy spec: "
            "distil from scratch instead (no --init)"
        )
    k = archive.archive.descriptor_size
    if init.measure_size != k:
        raise ConfigError(
            f"the initial generator is conditioned on {init.measure_size} measures "
            f"({', '.join(init.descriptor_names)}) but the archive has {k} descriptors; "
            "distil from scratch instead (no --init)"
        )


def archive_fingerprint(archive: ArchiveArtifact) -> str:
    """sha256 of the elites (cells, fitness, descriptors, genomes as float32): identifies the
    data a generator was distilled from, wherever the archive was loaded from."""
    cells = archive.elite_indices()
    digest = hashlib.sha256(np.asarray(cells, np.int64).tobytes())
    a = archive.archive
    for array in (a.fitness, a.descriptors):
        digest.update(np.asarray(array, np.float32)[cells].tobytes())
    for leaf in jax.tree_util.tree_leaves(a.genomes):
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)[cells]).tobytes())
    return digest.hexdigest()


def _generator_fingerprint(generator: Generator) -> str:
    digest = hashlib.sha256()
    for module in (generator.vae, generator.denoiser, generator.measure_encoder):
        for leaf in jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_array)):
            digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()
