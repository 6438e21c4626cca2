"""Distil an archive of policies into a :class:`~zoo.generator.Generator`.

Two phases, each a sequence of compiled chunks (``lax.scan`` over ``chunk`` optimiser steps,
:mod:`training.fit`): the policy VAE on the archive's elites
(:mod:`training.distill.vae`), then a latent denoiser conditioned on the elites' measures,
on sentence embeddings of their labels (``condition="text"``, :mod:`training.distill.text`),
or both (:mod:`training.distill.diffusion`). With ``archive_basis`` the decoder's basis heads (and
the encoder's matching projections) start from the archive's principal directions, per
layer: the VAE then starts close to a PCA of the archive and training refines it, which
matters because a walker's gait changes under parameter errors of a few percent of the
archive's spread.

A run directory ``OUT`` (:class:`training.rundir.RunDir`) ends up holding the generator
artifact (``config.json``, ``vae/``, ``denoiser/``, ``condition_encoder/`` with measures,
``text_condition_encoder/`` with text, ``README.md``),
the log ``metrics.jsonl`` (one JSON object per chunk: phase, step, mean training losses, and
evaluation metrics every ``eval_every`` steps) and ``checkpoint/`` (``run.json``,
``vae.safetensors``, ``diffusion.safetensors``: parameters, optimiser state and step of each
phase), rewritten atomically after every chunk. Step ``s`` of a phase draws its randomness
from ``fold_in(key(seed) split per phase, s)``, so ``resume=True`` reproduces the
uninterrupted run exactly, whatever chunk it was stopped at.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, PyTree
from tqdm.auto import tqdm

from models.diffusion import cosine_schedule
from models.policy import PolicySpec
from training import distributed, fit
from training.distill.config import DistillConfig
from training.distill.diffusion import (
    DIFFUSION_EVALUATION_ROWS,
    DiffusionSettings,
    diffusion_chunk,
    evaluate_diffusion,
    evaluate_text_diffusion,
    init_diffusion,
    init_text_diffusion,
    scaled_latents,
    text_diffusion_chunk,
)
from training.distill.text import (
    LABEL_COMMAND,
    TextConditions,
    labels_for_elites,
    read_labels,
    text_conditions,
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
from zoo.catalog import recorded_path
from zoo.errors import ArtifactError, ConfigError, NonFiniteError, TaskMismatchError
from zoo.generator import Generator, measure_encoder_config, text_encoder_identity

__all__ = ["archive_fingerprint", "distill"]

VAE_STATE = "vae.safetensors"
DIFFUSION_STATE = "diffusion.safetensors"
RECORD_PARTS = {
    "config": "config",
    "archive": "archive (its elites differ)",
    "init": "initial generator",
    "labels": "labels (their texts or embeddings differ)",
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
    labels: str | Path | Sequence[Mapping[str, Any]] | None = None,
    text_encoder: Any = None,
    mesh: Mesh | None = None,
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
        labels: with text conditions (``config.condition`` ``"text"`` or ``"both"``): the
            labels file of the archive (``qdzoo label``), or its records; every elite needs
            one. Its texts (label and paraphrases) are embedded once by the frozen sentence
            encoder before training.
        text_encoder: the sentence encoder (default :meth:`zoo.text_encoder.TextEncoder.load`).
        mesh: data parallelism (``qdzoo distill --distributed``): a 1-D mesh (axis
            ``"data"``) over which every optimiser step's minibatch is split, the devices of
            several processes included (:mod:`training.distributed`; only process 0
            writes). Parameters and optimiser states stay replicated; the gradients are
            averaged by an all-reduce. ``None`` (or one device): a plain run on one device.

    With ``init`` and text conditions, a generator accepting the same conditions is warm
    started whole; one accepting others (e.g. the measures-only bundled generator) lends its
    VAE alone (``vae_steps=0`` keeps it as is), the denoiser and condition encoders start
    fresh from ``config``.

    Raises:
        OutputExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite``.
        ConfigError: ``resume`` with another config, archive, ``init`` or labels; an archive
            of vector genomes or with fewer than 2 elites; a ``batch_size`` that is not a
            multiple of the ``mesh``'s devices; ``init`` with another measure
            count; text conditions without labels, or labels of another archive.
        MissingTextEncoderError: text conditions and the sentence encoder is not set up.
        TaskMismatchError: ``init`` emits policies of another spec.
    """
    run_dir = RunDir(out, kind="distillation")
    spec = _check_archive(archive)
    if mesh is not None and mesh.size <= 1:
        mesh = None  # one device: exactly the plain run
    if mesh is not None and config.batch_size % mesh.size:
        raise ConfigError(
            f"--distributed splits every minibatch over all {mesh.size} devices, so batch_size "
            f"must be a multiple of {mesh.size}; given {config.batch_size} (e.g. --set "
            f"batch_size={mesh.size * max(1, round(config.batch_size / mesh.size))})"
        )
    writer = distributed.is_writer()  # only process 0 of a multi-process run writes
    if init is not None:
        _check_init(init, spec, archive, with_measures="measures" in config.conditions)
    text: TextConditions | None = None
    text_config: dict[str, Any] | None = None
    if "text" in config.conditions:
        text, text_encoder = _text_data(archive, labels, text_encoder)
        vae_config, denoiser_config, encoder_config, text_config = _text_architecture(
            archive, config, init, int(text.table.shape[1])
        )
    else:
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
    if text is not None:
        record["architecture"]["text_condition_encoder"] = text_config
        record["labels"] = text.fingerprint()
    resuming = (
        run_dir.prepare(record, resume=resume, overwrite=overwrite, parts=RECORD_PARTS)
        if writer or not overwrite
        else False
    )
    distributed.barrier("qdzoo-distill-prepared")  # every process checked before 0 writes
    if not resuming and writer:
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
    if resuming and writer:
        last = {
            "vae": run_dir.counter(VAE_STATE, "step") or 0,
            "diffusion": run_dir.counter(DIFFUSION_STATE, "step") or 0,
        }
        run_dir.truncate_log(lambda row: row["step"] <= last.get(row["phase"], 0))

    final: dict[str, Any] = {}
    try:
        with run_dir.open_log() if writer else contextlib.nullcontext() as log:
            # --- phase 1: VAE -----------------------------------------------------------
            vae_settings = VAESettings.from_config(config)
            params, static = eqx.partition(vae, vae.trainable_filter())
            data = _replicate((static, elites, states, k_vae), mesh)
            params, vae_evaluation = _run_phase(
                "vae", config, run_dir, resuming, progress, log, vae_settings.optimiser, params,
                lambda p, s, start, stop: vae_chunk(
                    p, data[0], s, *data[1:], start, stop, vae_settings, mesh
                ),
                lambda p: evaluate_vae(eqx.combine(p, static), evaluation_elites, states), mesh,
            )  # fmt: skip
            vae = eqx.combine(params, static)
            if vae_evaluation:
                final["vae"] = vae_evaluation

            # --- phase 2: latent diffusion ----------------------------------------------
            latents = scaled_latents(vae, elites)
            schedule = cosine_schedule(config.num_timesteps)
            if text is not None:
                d_params, d_static, diffusion_evaluation = _text_diffusion_phase(
                    config, run_dir, resuming, progress, log, init, latents.latents,
                    conditions if "measures" in config.conditions else None, text, schedule,
                    (denoiser_config, encoder_config, text_config),
                    (k_diffusion, k_diffusion_init, k_evaluation), mesh,
                )  # fmt: skip
            else:
                if init is not None and init.conditions == config.conditions:
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
                data = _replicate(
                    (d_static, latents.latents, conditions, schedule, k_diffusion), mesh
                )
                d_params, diffusion_evaluation = _run_phase(
                    "diffusion", config, run_dir, resuming, progress, log,
                    diffusion_settings.optimiser, d_params,
                    lambda p, s, start, stop: diffusion_chunk(
                        p, data[0], s, *data[1:], start, stop, diffusion_settings, mesh
                    ),
                    lambda p: evaluate_diffusion(
                        *eqx.combine(p, d_static), evaluation_latents, evaluation_conditions,
                        schedule, k_evaluation,
                    ),
                    mesh,
                )  # fmt: skip
            if diffusion_evaluation:
                final["diffusion"] = diffusion_evaluation
    except KeyboardInterrupt:
        raise KeyboardInterrupt(run_dir.interrupted(_checkpointed(run_dir))) from None
    text_module = None
    if text is not None:
        denoiser, encoder, text_module = eqx.combine(d_params, d_static)
    else:
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
            "path": None if init.path is None else recorded_path(init.path),
            "source_archive": init.config.get("source_archive", {}).get("name"),
        },
        "config": config.to_dict(),
    }  # fmt: skip
    if text is not None:
        training["condition"] = config.condition
        training["labels"] = {
            "source": recorded_path(labels) if isinstance(labels, str | Path) else None,
            "texts": len(text.texts),
            "distinct_labels": len({text.texts[int(i)] for i in np.asarray(text.index[:, 0])}),
            "fingerprint": record["labels"],
        }
    generator_config = _generator_config(
        archive, spec, config, latents.clip_x0, training, record["archive"], source
    )
    if text is not None:
        generator_config["text_encoder"] = text_encoder_identity(text_encoder)
    generator = Generator(
        vae, denoiser, encoder, schedule, latents.latent_scale, generator_config,
        text_condition_encoder=text_module,
    )  # fmt: skip
    if writer:
        generator.save_pretrained(run_dir.path)
    return generator


def _text_data(
    archive: ArchiveArtifact,
    labels: str | Path | Sequence[Mapping[str, Any]] | None,
    encoder: Any,
) -> tuple[TextConditions, Any]:
    """The elites' texts embedded by the sentence encoder (loaded when ``None``)."""
    if labels is None:
        raise ConfigError(
            "text conditions need the elites' labels: write them with "
            f"`{LABEL_COMMAND}` and pass labels=PATH (`--labels` in the CLI; default "
            "labels.json beside the archive)"
        )
    where = "the labels"
    if isinstance(labels, str | Path):
        where = str(labels)
        labels = read_labels(labels)
    cells = archive.elite_indices()
    descriptors = np.asarray(archive.archive.descriptors, np.float64)[cells]
    texts = labels_for_elites(labels, np.asarray(cells), descriptors, where=where)
    if encoder is None:
        from zoo.text_encoder import TextEncoder

        encoder = TextEncoder.load()
    return text_conditions(texts, encoder), encoder


def _text_architecture(
    archive: ArchiveArtifact, config: DistillConfig, init: Generator | None, embedding_size: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """The VAE, denoiser, measure-encoder (``None`` for ``"text"``) and text-condition-encoder
    constructor arguments of a text-conditioned run: ``init``'s when it accepts the same
    conditions; else its VAE (when given) with the config's other modules."""
    if init is not None and init.conditions == config.conditions:
        vae_config, denoiser_config, encoder_config = _architecture(archive, config, init)
        text_config = init.text_condition_encoder.config
        if init.measure_encoder is None:
            encoder_config = None
        return vae_config, denoiser_config, encoder_config, text_config
    vae_config, _, encoder_config = _architecture(archive, config, init)
    token_size = config.condition_encoder["token_size"]
    text_config = {
        **config.text_condition_encoder,
        "embedding_size": embedding_size,
        "token_size": token_size,
    }
    tokens = text_config["num_tokens"]
    if "measures" in config.conditions:
        tokens += encoder_config["num_tokens"]
    else:
        encoder_config = None
    denoiser_config = {
        **config.denoiser,
        "latent_size": vae_config["latent_size"],
        "condition_size": token_size,
        "num_condition_tokens": tokens,
    }
    return vae_config, denoiser_config, encoder_config, text_config


def _text_diffusion_phase(
    config: DistillConfig,
    run_dir: RunDir,
    resuming: bool,
    progress: bool,
    log: IO[str],
    init: Generator | None,
    latents: Array,
    conditions: Array | None,
    text: TextConditions,
    schedule: Any,
    architecture: tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]],
    keys: tuple[Array, Array, Array],
    mesh: Mesh | None = None,
) -> tuple[PyTree, PyTree, dict[str, float]]:
    """The diffusion phase with text conditions: ``(params, static, last evaluation)`` of
    ``(denoiser, measure encoder or None, text condition encoder)``."""
    k_diffusion, k_init, k_evaluation = keys
    denoiser_config, encoder_config, text_config = architecture
    if init is not None and init.conditions == config.conditions:
        model = (init.denoiser, init.measure_encoder, init.text_condition_encoder)
    else:
        model = init_text_diffusion(
            tuple(sorted(denoiser_config.items())),
            None if encoder_config is None else tuple(sorted(encoder_config.items())),
            tuple(sorted(text_config.items())),
            k_init,
        )
    settings = DiffusionSettings.from_config(config)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    elites = latents.shape[0]
    repeats = max(1, DIFFUSION_EVALUATION_ROWS // elites)
    evaluation_latents = jnp.tile(latents, (repeats, 1))
    evaluation_conditions = None if conditions is None else jnp.tile(conditions, (repeats, 1))
    evaluation_text = jnp.tile(text.labels, (repeats, 1))
    data = _replicate((static, latents, conditions, text, schedule, k_diffusion), mesh)
    params, evaluation = _run_phase(
        "diffusion", config, run_dir, resuming, progress, log, settings.optimiser, params,
        lambda p, s, start, stop: text_diffusion_chunk(
            p, data[0], s, *data[1:], start, stop, settings, mesh
        ),
        lambda p: evaluate_text_diffusion(
            *eqx.combine(p, static), evaluation_latents, evaluation_conditions,
            evaluation_text, schedule, k_evaluation,
        ),
        mesh,
    )  # fmt: skip
    return params, static, evaluation


def _architecture(
    archive: ArchiveArtifact, config: DistillConfig, init: Generator | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The VAE (``archive_normalisation`` included), denoiser and measure-encoder
    constructor arguments of the run: ``init``'s, else the config's fitted to the archive
    (only the VAE's are ``init``'s when it accepts other conditions than ``config``; the
    measure encoder's are ``None`` for an ``init`` without one)."""
    if init is not None and init.conditions == config.conditions:
        vae_config = dict(init.vae.config)
        denoiser_config = init.denoiser.config
        encoder_config = (
            None if init.measure_encoder is None else measure_encoder_config(init.measure_encoder)
        )
        normalisation = bool(vae_config.pop("archive_normalisation"))
    else:
        vae_config = dict(config.vae)
        normalisation = config.archive_normalisation
        if init is not None:  # its VAE alone
            vae_config = dict(init.vae.config)
            normalisation = bool(vae_config.pop("archive_normalisation"))
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
    log: IO[str] | None,
    optimiser: fit.OptimiserConfig,
    params: PyTree,
    chunk_fn: Callable[[PyTree, PyTree, Array, Array], tuple[PyTree, PyTree, Any, Array]],
    evaluate_fn: Callable[[PyTree], dict[str, Array]],
    mesh: Mesh | None = None,
) -> tuple[PyTree, dict[str, float]]:
    """Run one phase (``"vae"`` or ``"diffusion"``) from its checkpoint (when ``resuming``)
    or its start to ``config.<phase>_steps``: chunks, log rows, checkpoints, progress.
    Returns the trained ``params`` and the last evaluation (``{}`` for a phase of 0 steps).

    With a ``mesh`` the chunks run on its replicated ``params`` and optimiser state; only
    the writer (``log`` given) writes log rows and checkpoints; every process evaluates its
    own replica and gets it back."""
    total = getattr(config, f"{phase}_steps")
    name = VAE_STATE if phase == "vae" else DIFFUSION_STATE
    opt_state = fit.optimiser(optimiser).init(params)
    step = 0
    if resuming and run_dir.has_checkpoint(name):
        params, opt_state, step = _load_phase(run_dir, name, params, opt_state)
    stop = jnp.asarray(total, jnp.int32)
    params, opt_state, stop = _replicate((params, opt_state, stop), mesh)
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
            try:
                params, opt_state, metrics, taken = chunk_fn(
                    params, opt_state, _replicate(jnp.asarray(step, jnp.int32), mesh), stop
                )
                train = _host(*distributed.to_host_local((metrics, taken)))
            except jax.errors.JaxRuntimeError as err:
                if not distributed.is_multiprocess():
                    raise
                raise distributed.peer_lost(
                    err, run_dir.interrupted(_checkpointed(run_dir))
                ) from None
            local = distributed.to_host_local(params)
            if not all(math.isfinite(v) for v in train.values()):
                raise NonFiniteError(
                    f"the {phase} losses became NaN or infinite between steps {step} and {end} "
                    f"({train}); lower the learning rate ({phase}_lr) or the gradient clipping "
                    f"(grad_clip), then start again or --resume from step {step}"
                )
            evaluated: dict[str, float] = {}
            if end == total or end // config.eval_every > step // config.eval_every:
                evaluated = {k: float(v) for k, v in evaluate_fn(local).items()}
                evaluation = evaluated
            if log is not None:
                RunDir.write_rows(log, [_log_row(phase, end, train, evaluated)])
                state = {
                    "step": jnp.asarray(end, jnp.int32),
                    "params": local,
                    "opt_state": opt_state,
                }
                run_dir.save(name, distributed.to_host_local(state))
            bar.update(end - step)
            step = end
            bar.set_postfix({k: f"{v:.4g}" for k, v in {**train, **evaluated}.items()})
    finally:
        bar.close()
    params = distributed.to_host_local(params)  # each process's own replica
    if not evaluation and total > 0:  # resumed after the phase ended: evaluate its result
        evaluation = {k: float(v) for k, v in evaluate_fn(params).items()}
    return params, evaluation


def _replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` on every device of ``mesh`` (the devices of other processes included);
    unchanged without a mesh."""
    if mesh is None:
        return tree
    arrays, rest = eqx.partition(tree, eqx.is_array)
    return eqx.combine(distributed.replicate_global(arrays, mesh), rest)


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


def _check_init(
    init: Generator, spec: PolicySpec, archive: ArchiveArtifact, *, with_measures: bool = True
) -> None:
    if init.policy_spec != spec:
        raise TaskMismatchError(
            f"the initial generator emits policies {init.policy_spec.to_dict()} (task "
            f"{init.config['task']['name']!r}) but the archive holds {spec.to_dict()} (task "
            f"{archive.config['task']['name']!r}); warm starts need the same policy spec: "
            "distil from scratch instead (no --init)"
        )
    k = archive.archive.descriptor_size
    if with_measures and init.measure_size != k:
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
    modules = (generator.vae, generator.denoiser, generator.measure_encoder)
    if generator.text_condition_encoder is not None:
        modules += (generator.text_condition_encoder,)
    for module in modules:
        for leaf in jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_array)):
            digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()
