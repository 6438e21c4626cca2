"""Distil an archive of policies into a :class:`~zoo.generator.Generator`.

Two phases, each a sequence of compiled chunks (``lax.scan`` over ``chunk`` optimiser steps):

1. **Policy VAE** on the archive's elites (their genomes as an :class:`MLPPolicy` population):
   parameter reconstruction (in the archive-normalised space when ``archive_normalisation``)
   + ``kl_weight`` x KL, and optionally ``behaviour_weight`` x the squared difference of the
   actions of original and decoded policies on observations visited by the elites (one
   rollout of every elite in its task, made once before training). Adam, gradient clipping.
   With ``archive_basis`` the decoder's basis heads (and the encoder's matching projections)
   start from the archive's principal directions, per layer: the VAE then starts close to a
   PCA of the archive and training refines it, which matters because a walker's gait
   changes under parameter errors of a few percent of the archive's spread.
2. **Latent diffusion**: every elite is encoded (posterior mean); ``latent_scale`` = 1 / std of
   these latents; the denoiser and the measure encoder are trained jointly (AdamW, gradient
   clipping) on (scaled latents, elite descriptors normalised to ``[0, 1]`` by the archive
   bounds), dropping the condition with probability ``condition_dropout`` (classifier-free
   guidance). The measure encoder sees Fourier features of the measures (neighbouring cells
   can hold unrelated policies). The diffusion phase is cheap next to the VAE's and needs
   many steps: with too few, the probability-flow ODE sends a fraction of the requests to
   another elite's latent.

A run directory ``OUT`` ends up holding the generator artifact (``config.json``, ``vae/``,
``denoiser/``, ``condition_encoder/``, ``README.md``), the log ``metrics.jsonl`` (one JSON
object per chunk: phase, step, mean training losses, and evaluation metrics every
``eval_every`` steps) and ``checkpoint/`` (``run.json``, ``vae.safetensors``,
``diffusion.safetensors``: parameters, optimiser state and step of each phase), rewritten
atomically after every chunk. Step ``s`` of a phase draws its randomness from
``fold_in(key(seed) split per phase, s)``, so ``resume=True`` reproduces the uninterrupted run
exactly, whatever chunk it was stopped at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from models.denoiser import ConditionalDenoiser, MeasureEncoder
from models.diffusion import DiffusionSchedule, cosine_schedule, diffusion_loss
from models.policy import MLPPolicy, PolicySpec
from models.policy_vae import PolicyVAE, policy_to_parameters, vae_loss
from zoo.archive_artifact import ArchiveArtifact, finite_or_none, library_versions
from zoo.errors import (
    ArtifactError,
    ConfigError,
    NonFiniteError,
    OutputExistsError,
    TaskMismatchError,
)
from zoo.generator import Generator, encode_means, measure_encoder_config
from zoo.serialization import (
    arrays_to_tree,
    dataclass_from_dict,
    load_arrays,
    read_json,
    save_arrays,
    tree_to_arrays,
    write_json,
)

__all__ = [
    "DEFAULT_CONDITION_ENCODER",
    "DEFAULT_DENOISER",
    "DEFAULT_VAE",
    "DistillConfig",
    "archive_fingerprint",
    "distill",
]

CHECKPOINT_DIR = "checkpoint"
RUN_CONFIG = "run.json"
VAE_STATE = "vae.safetensors"
DIFFUSION_STATE = "diffusion.safetensors"
METRICS_LOG = "metrics.jsonl"

DEFAULT_VAE: dict[str, Any] = {
    "latent_size": 64,
    "cnn_channels": (4, 8),
    "cnn_grid": 4,
    "vector_width": 32,
    "projection_width": 128,
    "node_size": 16,
    "message_rounds": 2,
    "num_heads": 2,
    "head_width": 16,
    "basis_size": 128,
    "basis_width": 256,
    "normaliser_width": 64,
}
""":class:`PolicyVAE` keyword arguments (``archive_normalisation`` aside), small enough to train
on a CPU: about 0.1 s per step of 32 policies for a 17 -> 64 -> 64 -> 6 policy on 2 cores."""

DEFAULT_DENOISER: dict[str, Any] = {
    "width": 128,
    "num_blocks": 3,
    "num_heads": 4,
    "time_embedding_size": 64,
}
""":class:`ConditionalDenoiser` keyword arguments (the latent size, the condition size and the
number of condition tokens follow the VAE and the condition encoder)."""

DEFAULT_CONDITION_ENCODER: dict[str, Any] = {
    "num_tokens": 4,
    "token_size": 32,
    "width": 64,
    "frequencies": 6,
}
""":class:`MeasureEncoder` keyword arguments (the measure size follows the archive)."""

FINAL_LR_FRACTION = 0.01
"""With ``lr_schedule="cosine"`` the learning rate decays to this fraction of its start."""
X0_CLIP_MARGIN = 1.25
"""Sampling clips the implied clean scaled latent to this many times the largest absolute
scaled latent of the archive (``config["diffusion"]["clip_x0"]``, see
:func:`zoo.generator.clipped_eps_fn`)."""
STATES_POOL = 4096
"""At most this many observations (from the elites' rollouts) feed the behaviour loss."""
VAE_EVALUATION_ELITES = 256
"""Elites the periodic VAE evaluation reconstructs (a fixed random subset when more)."""
DIFFUSION_EVALUATION_ROWS = 1024
"""Rows (elites repeated with fresh noise) of the fixed diffusion evaluation batch."""


_DERIVED = {
    "vae": ("self", "spec", "key", "archive_normalisation"),
    "denoiser": ("self", "key", "latent_size", "condition_size", "num_condition_tokens"),
    "condition_encoder": ("self", "key", "measure_size"),
}
"""Constructor arguments that are not hyperparameters of a :class:`DistillConfig` dict (they
follow the archive, the VAE or the condition encoder, or have their own field)."""


def _valid_keys(kind: str) -> set[str]:
    cls = {"vae": PolicyVAE, "denoiser": ConditionalDenoiser, "condition_encoder": MeasureEncoder}
    parameters = inspect.signature(cls[kind].__init__).parameters
    return set(parameters) - set(_DERIVED[kind])


def _merge(kind: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    valid = _valid_keys(kind)
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ConfigError(f"unknown {kind} hyperparameters {unknown}; valid: {sorted(valid)}")
    merged = {**defaults, **given}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything that defines a distillation run (stored in ``checkpoint/run.json``).

    Attributes:
        vae: :class:`PolicyVAE` hyperparameters, overrides of :data:`DEFAULT_VAE` (the full
            dict after construction).
        denoiser: :class:`ConditionalDenoiser` hyperparameters (:data:`DEFAULT_DENOISER`).
        condition_encoder: :class:`MeasureEncoder` hyperparameters
            (:data:`DEFAULT_CONDITION_ENCODER`).
        archive_normalisation: standardise every policy scalar by its mean / std over the
            archive before the VAE sees it.
        archive_basis: start the decoder's basis heads from the archive's principal
            directions (:meth:`PolicyVAE.with_archive_basis`; ignored with ``init``).
        vae_steps: VAE optimiser steps (0 with ``init``: keep the initial VAE).
        vae_lr: Adam learning rate of the VAE.
        kl_weight: weight of the KL term (tiny: larger values collapse to the mean policy).
        behaviour_weight: weight of the action-matching term (0: parameters only).
        behaviour_states: observations per step for the behaviour term.
        diffusion_steps: denoiser optimiser steps.
        diffusion_lr: AdamW learning rate of the denoiser and the measure encoder.
        weight_decay: AdamW weight decay.
        num_timesteps: ``T`` of the cosine noise schedule.
        condition_dropout: probability of training a row with the null condition.
        batch_size: elites per optimiser step (sampled with replacement), both phases.
        grad_clip: global gradient-norm clipping, both phases.
        lr_schedule: ``"cosine"`` (each phase's learning rate decays along a half cosine to
            1% of its start at the phase's last step) or ``"constant"``.
        seed: every random draw of the run derives from it.
        eval_every: evaluate (and log the evaluation) after the chunk that passes a multiple
            of this many steps, and after the last one.
        chunk: optimiser steps per compiled chunk (progress, log and checkpoint after each).
    """

    vae: dict[str, Any] = dataclasses.field(default_factory=dict)
    denoiser: dict[str, Any] = dataclasses.field(default_factory=dict)
    condition_encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    archive_normalisation: bool = True
    archive_basis: bool = True
    vae_steps: int = 6000
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    behaviour_weight: float = 0.0
    behaviour_states: int = 32
    diffusion_steps: int = 100000
    diffusion_lr: float = 1e-3
    weight_decay: float = 1e-4
    num_timesteps: int = 600
    condition_dropout: float = 0.1
    batch_size: int = 32
    grad_clip: float = 1.0
    lr_schedule: str = "cosine"
    seed: int = 0
    eval_every: int = 500
    chunk: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "vae", _merge("vae", DEFAULT_VAE, self.vae))
        object.__setattr__(self, "denoiser", _merge("denoiser", DEFAULT_DENOISER, self.denoiser))
        object.__setattr__(
            self,
            "condition_encoder",
            _merge("condition_encoder", DEFAULT_CONDITION_ENCODER, self.condition_encoder),
        )
        for name in ("vae_steps", "diffusion_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("behaviour_states", "num_timesteps", "batch_size", "eval_every", "chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("vae_lr", "diffusion_lr", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("kl_weight", "behaviour_weight", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0 or not math.isfinite(value):
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if not 0 <= self.condition_dropout < 1:
            raise ConfigError(
                f"condition_dropout must be in [0, 1), got {self.condition_dropout!r}"
            )
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        return dataclass_from_dict(cls, d, "distillation config")


# ------------------------------------------------------------------------ compiled steps


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Static (hashed) settings of a compiled chunk."""

    length: int
    batch_size: int
    learning_rate: float
    grad_clip: float
    weight_decay: float | None = None  # None: Adam, else AdamW
    cosine: bool = False  # decay the learning rate along a half cosine until ``stop``
    kl_weight: float = 0.0
    behaviour_weight: float = 0.0
    behaviour_states: int = 0
    condition_dropout: float = 0.0


def _optimiser(settings: _Settings, horizon: Array | int = 1) -> optax.GradientTransformation:
    """Gradient clipping, then Adam (AdamW with a weight decay); with ``settings.cosine`` the
    updates are scaled by a half cosine from 1 at the first step to
    :data:`FINAL_LR_FRACTION` at step ``horizon`` (may be traced: the state does not depend
    on it, so runs of any length share one compiled chunk)."""
    if settings.weight_decay is None:
        inner = optax.adam(settings.learning_rate)
    else:
        inner = optax.adamw(settings.learning_rate, weight_decay=settings.weight_decay)
    parts = [optax.clip_by_global_norm(settings.grad_clip), inner]
    if settings.cosine:

        def cosine(count: Array) -> Array:
            progress = jnp.minimum(count / jnp.maximum(horizon, 1), 1.0)
            decay = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
            return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * decay

        parts.append(optax.scale_by_schedule(cosine))
    return optax.chain(*parts)


def _scan_chunk(
    step_fn: Callable[[PyTree, PyTree, PRNGKeyArray], tuple[PyTree, PyTree, dict[str, Array]]],
    params: PyTree,
    opt_state: PyTree,
    key: PRNGKeyArray,
    start: Array,
    stop: Array,
    length: int,
) -> tuple[PyTree, PyTree, dict[str, Array], Array]:
    """``length`` steps ``start, start + 1, ...``; steps at or past ``stop`` leave the state
    alone. Step ``s`` uses the key ``fold_in(key, s)``. Returns the per-step metrics and the
    mask of steps taken."""
    metrics_shape = jax.eval_shape(step_fn, params, opt_state, key)[2]

    def one(carry: tuple[PyTree, PyTree], i: Array) -> tuple[tuple[PyTree, PyTree], Any]:
        step = start + i

        def active(carry: tuple[PyTree, PyTree]) -> tuple[tuple[PyTree, PyTree], Any]:
            params, opt_state, metrics = step_fn(*carry, jax.random.fold_in(key, step))
            return (params, opt_state), metrics

        def idle(carry: tuple[PyTree, PyTree]) -> tuple[tuple[PyTree, PyTree], Any]:
            zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)
            return carry, zeros

        carry, metrics = jax.lax.cond(step < stop, active, idle, carry)
        return carry, (metrics, step < stop)

    (params, opt_state), (metrics, taken) = jax.lax.scan(
        one, (params, opt_state), jnp.arange(length)
    )
    return params, opt_state, metrics, taken


@eqx.filter_jit
def _vae_chunk(
    params: PolicyVAE,
    static: PolicyVAE,
    opt_state: PyTree,
    elites: MLPPolicy,
    states: Float[Array, "pool obs"] | None,
    key: PRNGKeyArray,
    start: Array,
    stop: Array,
    settings: _Settings,
) -> tuple[PolicyVAE, PyTree, dict[str, Array], Array]:
    """One chunk of VAE training (see :func:`_scan_chunk`); ``params`` holds the trainable
    arrays of the VAE, ``static`` the rest (archive statistics included)."""
    optimiser = _optimiser(settings, stop)
    num_elites = jax.tree_util.tree_leaves(elites)[0].shape[0]

    def loss(params: PolicyVAE, batch: MLPPolicy, obs: Array | None, key: PRNGKeyArray):  # type: ignore[no-untyped-def]
        return vae_loss(
            eqx.combine(params, static), batch, key, settings.kl_weight, states=obs,
            behaviour_weight=settings.behaviour_weight,
        )  # fmt: skip

    def step(params: PolicyVAE, opt_state: PyTree, key: PRNGKeyArray):  # type: ignore[no-untyped-def]
        k_batch, k_states, k_loss = jax.random.split(key, 3)
        index = jax.random.randint(k_batch, (settings.batch_size,), 0, num_elites)
        batch = jax.tree_util.tree_map(lambda x: x[index], elites)
        obs = None
        if states is not None:
            rows = jax.random.randint(k_states, (settings.behaviour_states,), 0, states.shape[0])
            obs = states[rows]
        grads, metrics = jax.grad(loss, has_aux=True)(params, batch, obs, k_loss)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return _scan_chunk(step, params, opt_state, key, start, stop, settings.length)


@eqx.filter_jit
def _diffusion_chunk(
    params: tuple[ConditionalDenoiser, MeasureEncoder],
    static: tuple[ConditionalDenoiser, MeasureEncoder],
    opt_state: PyTree,
    latents: Float[Array, "elites latent"],
    conditions: Float[Array, "elites k"],
    schedule: DiffusionSchedule,
    key: PRNGKeyArray,
    start: Array,
    stop: Array,
    settings: _Settings,
) -> tuple[Any, PyTree, dict[str, Array], Array]:
    """One chunk of denoiser + measure-encoder training on scaled latents."""
    optimiser = _optimiser(settings, stop)

    def loss(params: Any, x0: Array, condition: Array, key: PRNGKeyArray) -> Array:
        denoiser, encoder = eqx.combine(params, static)
        tokens = jax.vmap(encoder)(condition)
        return diffusion_loss(
            denoiser.batched, schedule, x0, tokens, key, null_condition=denoiser.null_condition,
            condition_dropout=settings.condition_dropout,
        )  # fmt: skip

    def step(params: Any, opt_state: PyTree, key: PRNGKeyArray):  # type: ignore[no-untyped-def]
        k_batch, k_loss = jax.random.split(key)
        index = jax.random.randint(k_batch, (settings.batch_size,), 0, latents.shape[0])
        value, grads = jax.value_and_grad(loss)(params, latents[index], conditions[index], k_loss)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": value}

    return _scan_chunk(step, params, opt_state, key, start, stop, settings.length)


@eqx.filter_jit
def _evaluate_vae(
    vae: PolicyVAE, elites: MLPPolicy, states: Float[Array, "pool obs"] | None
) -> dict[str, Array]:
    """Reconstruction of ``elites`` from their posterior means.

    ``parameter_error``: mean squared error over all policy scalars; ``relative_error``: that
    divided by the mean per-scalar variance over ``elites``; ``normalised_error``: the error
    in the space the VAE models; ``behaviour_error``: mean squared action difference on
    ``states`` (when given).
    """
    means = jax.lax.map(lambda p: vae.encode(p)[0], elites, batch_size=64)
    decoded = jax.lax.map(vae.decode_parameters, means, batch_size=64)
    target = jax.vmap(lambda p: vae.normalise(policy_to_parameters(p)))(elites)
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])
    raw = jax.vmap(lambda p: ravel_pytree(vae.denormalise(p))[0])
    decoded_raw, target_raw = raw(decoded), raw(target)
    error = jnp.mean((decoded_raw - target_raw) ** 2)
    out = {
        "parameter_error": error,
        "relative_error": error / jnp.maximum(jnp.mean(jnp.var(target_raw, axis=0)), 1e-12),
        "normalised_error": jnp.mean((flat(decoded) - flat(target)) ** 2),
    }
    if states is not None:
        policies = jax.lax.map(vae.decode, means, batch_size=64)
        act = eqx.filter_vmap(lambda p: jax.vmap(p)(states))
        out["behaviour_error"] = jnp.mean((act(policies) - act(elites)) ** 2)
    return out


@eqx.filter_jit
def _evaluate_diffusion(
    denoiser: ConditionalDenoiser,
    encoder: MeasureEncoder,
    latents: Float[Array, "rows latent"],
    conditions: Float[Array, "rows k"],
    schedule: DiffusionSchedule,
    key: PRNGKeyArray,
) -> dict[str, Array]:
    """Denoising loss on a fixed batch with the condition (``loss``) and with the null
    condition (``unconditional_loss``; the gap measures how much the condition helps)."""
    tokens = jax.vmap(encoder)(conditions)
    null = jnp.broadcast_to(denoiser.null_condition, tokens.shape)
    kwargs = {"condition_dropout": 0.0}
    return {
        "loss": diffusion_loss(denoiser.batched, schedule, latents, tokens, key, **kwargs),
        "unconditional_loss": diffusion_loss(
            denoiser.batched, schedule, latents, null, key, **kwargs
        ),
    }


# ------------------------------------------------------------------------------ helpers

INIT_KEY_IMPL = "unsafe_rbg"
"""PRNG implementation of the keys that initialise the weights (from ``seed``): building a
model draws one random tensor per parameter, and this generator compiles those draws several
times faster than threefry on CPU. Training randomness uses the default (threefry) keys."""


@eqx.filter_jit
def _init_vae(
    spec: PolicySpec, hyperparameters: tuple[tuple[str, Any], ...], key: PRNGKeyArray
) -> PolicyVAE:
    """A fresh VAE (one compiled program per spec and architecture)."""
    return PolicyVAE(spec, key=key, **dict(hyperparameters))


@eqx.filter_jit
def _init_diffusion(
    denoiser: tuple[tuple[str, Any], ...],
    encoder: tuple[tuple[str, Any], ...],
    key: PRNGKeyArray,
) -> tuple[ConditionalDenoiser, MeasureEncoder]:
    """A fresh denoiser and measure encoder."""
    k_denoiser, k_encoder = jax.random.split(key)
    return (
        ConditionalDenoiser(key=k_denoiser, **dict(denoiser)),
        MeasureEncoder(key=k_encoder, **dict(encoder)),
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


def _collect_states(archive: ArchiveArtifact, elites: MLPPolicy, seed: int) -> np.ndarray:
    """Up to :data:`STATES_POOL` observations visited by the elites in their task."""
    task = archive.make_task()
    key = jax.random.key(archive.config.get("evaluation", {}).get("seed", seed))
    evaluate = eqx.filter_jit(lambda g, k: task.evaluate(g, k, return_trajectory=True).trajectory)
    count = jax.tree_util.tree_leaves(elites)[0].shape[0]
    batch = min(count, 256)
    pools = []
    for begin in range(0, count, batch):
        index = np.arange(begin, begin + batch) % count  # the last batch wraps: one shape
        batch_elites = jax.tree_util.tree_map(lambda x, i=index: x[i], elites)
        trajectory = evaluate(batch_elites, key)
        keep = min(batch, count - begin)
        obs = np.asarray(trajectory.observations)[:keep]
        valid = np.asarray(trajectory.valid)[:keep]
        pools.append(obs[valid])
    states = np.concatenate(pools)
    if states.shape[0] > STATES_POOL:
        rng = np.random.default_rng(seed)
        states = states[np.sort(rng.choice(states.shape[0], STATES_POOL, replace=False))]
    return states.astype(np.float32)


def _prepare_out_dir(out: Path, run: dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Check the output directory; return True if a checkpoint should be resumed."""
    ckpt = out / CHECKPOINT_DIR
    if resume:
        if not (ckpt / RUN_CONFIG).is_file():
            if out.exists() and any(out.iterdir()):
                raise ArtifactError(
                    f"--resume: {out} has no distillation checkpoint to resume "
                    f"({ckpt / RUN_CONFIG} missing)"
                )
            return False
        stored = read_json(ckpt / RUN_CONFIG)
        for key, what in (
            ("config", "config"),
            ("archive", "archive (its elites differ)"),
            ("init", "initial generator"),
        ):
            if stored.get(key) != run[key]:
                detail = ""
                if key == "config":
                    given = run["config"]
                    detail = ": " + str(
                        {
                            k: (v, given.get(k))
                            for k, v in stored["config"].items()
                            if v != given.get(k)
                        }
                    )
                raise ConfigError(
                    f"--resume: the run in {out} was started with a different {what}{detail}; "
                    "resume with the same arguments or use a new --out"
                )
        return True
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out} already exists and is not empty; pass --resume to continue the run in "
                "it or --overwrite to replace it"
            )
        shutil.rmtree(out)
    return False


def _save_state(path: Path, params: PyTree, opt_state: PyTree, step: int) -> None:
    state = {"step": jnp.asarray(step, jnp.int32), "params": params, "opt_state": opt_state}
    save_arrays(path, tree_to_arrays(state))


def _load_state(path: Path, params: PyTree, opt_state: PyTree) -> tuple[PyTree, PyTree, int]:
    template = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params),
        "opt_state": jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), opt_state
        ),
    }
    state = arrays_to_tree(template, load_arrays(path))
    return state["params"], state["opt_state"], int(state["step"])


def _truncate_log(path: Path, last_step: dict[str, int]) -> None:
    """Drop log rows past the checkpointed step of their phase (written after the last
    checkpoint of an interrupted run)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step.get(json.loads(line)["phase"], 0)
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _chunk_ends(start: int, total: int, chunk: int) -> list[int]:
    return list(range(start + chunk, total, chunk)) + [total] if start < total else []


def _host(metrics: dict[str, Array], taken: Array) -> dict[str, float]:
    """Means of the per-step metrics over the steps taken."""
    mask = np.asarray(taken)
    return {k: float(np.asarray(v)[mask].mean()) for k, v in metrics.items()}


def _log_row(phase: str, step: int, train: dict[str, float], evaluation: dict[str, Any]) -> str:
    row: dict[str, Any] = {"phase": phase, "step": step}
    row.update({k: finite_or_none(v) for k, v in train.items()})
    row.update({f"eval_{k}": finite_or_none(float(v)) for k, v in evaluation.items()})
    return json.dumps(row)


# ------------------------------------------------------------------------------ distill


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
    out = Path(out)
    spec = _check_archive(archive)
    if init is not None:
        _check_init(init, spec, archive)
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
    run_record = {
        "config": config.to_dict(),
        "architecture": json.loads(
            json.dumps(
                {
                    "vae": vae_config,
                    "denoiser": denoiser_config,
                    "condition_encoder": encoder_config,
                }
            )
        ),
        "archive": archive_fingerprint(archive),
        "init": None if init is None else _generator_fingerprint(init),
    }
    resuming = _prepare_out_dir(out, run_record, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        write_json(out / CHECKPOINT_DIR / RUN_CONFIG, run_record)
        (out / METRICS_LOG).unlink(missing_ok=True)
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
        states = jnp.asarray(_collect_states(archive, elites, config.seed))
    count = cells.size
    evaluation_rows = np.random.default_rng(config.seed).permutation(count)
    evaluation_rows = np.sort(evaluation_rows[:VAE_EVALUATION_ELITES])
    evaluation_elites = jax.tree_util.tree_map(lambda x: x[evaluation_rows], elites)

    k_vae, k_diffusion, k_evaluation = jax.random.split(jax.random.key(config.seed), 3)
    k_vae_init, k_diffusion_init = jax.random.split(jax.random.key(config.seed, impl=INIT_KEY_IMPL))

    # --- models -------------------------------------------------------------------------
    if init is not None:
        vae = init.vae
        if normalisation:
            vae = vae.with_archive_statistics(elites)
    else:
        vae = _init_vae(spec, tuple(sorted(vae_config.items())), k_vae_init)
        if normalisation:
            vae = vae.with_archive_statistics(elites)
        if config.archive_basis:
            vae = vae.with_archive_basis(elites)
    log_path = out / METRICS_LOG
    last_steps: dict[str, int] = {}

    # --- phase 1: VAE -------------------------------------------------------------------
    vae_settings = _Settings(
        length=min(config.chunk, max(config.vae_steps, 1)),
        batch_size=config.batch_size,
        learning_rate=float(config.vae_lr),
        grad_clip=float(config.grad_clip),
        cosine=config.lr_schedule == "cosine",
        kl_weight=float(config.kl_weight),
        behaviour_weight=float(config.behaviour_weight),
        behaviour_states=config.behaviour_states,
    )
    params, static = eqx.partition(vae, vae.trainable_filter())
    opt_state = _optimiser(vae_settings).init(params)
    step = 0
    vae_path = out / CHECKPOINT_DIR / VAE_STATE
    if resuming and vae_path.is_file():
        params, opt_state, step = _load_state(vae_path, params, opt_state)
    last_steps["vae"] = step
    diffusion_path = out / CHECKPOINT_DIR / DIFFUSION_STATE
    diffusion_state = None
    if resuming and diffusion_path.is_file():
        diffusion_state = diffusion_path
    last_diffusion = 0
    if diffusion_state is not None:
        last_diffusion = int(load_arrays(diffusion_state)["step"].reshape(()))
    last_steps["diffusion"] = last_diffusion
    if resuming:
        _truncate_log(log_path, last_steps)

    final: dict[str, Any] = {}
    try:
        with open(log_path, "a") as log:
            step, params, opt_state, vae_evaluation = _run_phase(
                "vae", config.vae_steps, step, config, progress, log, vae_path,
                params, opt_state,
                lambda p, s, start, stop: _vae_chunk(
                    p, static, s, elites, states, k_vae, start, stop, vae_settings
                ),
                lambda p: _evaluate_vae(eqx.combine(p, static), evaluation_elites, states),
            )  # fmt: skip
            vae = eqx.combine(params, static)
            if vae_evaluation:
                final["vae"] = vae_evaluation

            # --- phase 2: latent diffusion ----------------------------------------------
            means = encode_means(vae, elites)
            latent_std = float(jnp.std(means))
            latent_scale = 1.0 / max(latent_std, 1e-8)
            latents = means * latent_scale
            clip_x0 = X0_CLIP_MARGIN * float(jnp.max(jnp.abs(latents)))
            schedule = cosine_schedule(config.num_timesteps)
            if init is not None:
                model = (init.denoiser, init.measure_encoder)
            else:
                model = _init_diffusion(
                    tuple(sorted(denoiser_config.items())),
                    tuple(sorted(encoder_config.items())),
                    k_diffusion_init,
                )
            diffusion_settings = _Settings(
                length=min(config.chunk, max(config.diffusion_steps, 1)),
                batch_size=config.batch_size,
                learning_rate=float(config.diffusion_lr),
                grad_clip=float(config.grad_clip),
                weight_decay=float(config.weight_decay),
                cosine=config.lr_schedule == "cosine",
                condition_dropout=float(config.condition_dropout),
            )
            d_params, d_static = eqx.partition(model, eqx.is_inexact_array)
            d_opt_state = _optimiser(diffusion_settings).init(d_params)
            d_step = 0
            if diffusion_state is not None:
                d_params, d_opt_state, d_step = _load_state(diffusion_path, d_params, d_opt_state)
            repeats = max(1, DIFFUSION_EVALUATION_ROWS // count)
            evaluation_latents = jnp.tile(latents, (repeats, 1))
            evaluation_conditions = jnp.tile(conditions, (repeats, 1))
            d_step, d_params, d_opt_state, diffusion_evaluation = _run_phase(
                "diffusion", config.diffusion_steps, d_step, config, progress, log,
                diffusion_path, d_params, d_opt_state,
                lambda p, s, start, stop: _diffusion_chunk(
                    p, d_static, s, latents, conditions, schedule, k_diffusion, start, stop,
                    diffusion_settings,
                ),
                lambda p: _evaluate_diffusion(
                    *eqx.combine(p, d_static), evaluation_latents, evaluation_conditions,
                    schedule, k_evaluation,
                ),
            )  # fmt: skip
            if diffusion_evaluation:
                final["diffusion"] = diffusion_evaluation
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted; the last checkpoint in {out / CHECKPOINT_DIR} is intact: continue "
            "with --resume"
        ) from None
    denoiser, encoder = eqx.combine(d_params, d_static)

    archive_config = archive.config
    generator_config = {
        "task": archive_config["task"],
        "policy": spec.to_dict(),
        "descriptors": {
            "names": list(
                archive_config["archive"].get("descriptor_names")
                or archive_config["task"]["spec"]["descriptor_names"]
            ),
            "low": [float(x) for x in low],
            "high": [float(x) for x in high],
        },
        "diffusion": {
            "schedule": "cosine",
            "num_timesteps": config.num_timesteps,
            "clip_x0": clip_x0,
        },
        "training": {
            "vae_steps": config.vae_steps,
            "diffusion_steps": config.diffusion_steps,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "condition_dropout": config.condition_dropout,
            "wall_time_s": round(time.time() - started, 2),
            "latent_std": latent_std,
            "final": final,
            "init": None if init is None else {
                "fingerprint": run_record["init"],
                "path": None if init.path is None else str(init.path),
                "source_archive": init.config.get("source_archive", {}).get("name"),
            },
            "config": config.to_dict(),
        },
        "source_archive": {
            "name": source,
            "task": archive_config["task"]["name"],
            "algorithm": archive_config.get("algorithm", {}).get("name"),
            "recipe": archive_config.get("recipe"),
            "num_elites": int(count),
            "num_cells": int(a.num_cells),
            "num_parameters": int(count) * spec.num_parameters,
            "fingerprint": run_record["archive"],
            "metrics": archive_config.get("metrics") or archive.metrics(),
            "evaluation": archive_config.get("evaluation"),
        },
        "library_versions": library_versions(),
    }  # fmt: skip
    generator = Generator(vae, denoiser, encoder, schedule, latent_scale, generator_config)
    generator.save_pretrained(out)
    return generator


def _run_phase(
    phase: str,
    total: int,
    step: int,
    config: DistillConfig,
    progress: bool,
    log: Any,
    checkpoint: Path,
    params: PyTree,
    opt_state: PyTree,
    chunk_fn: Callable[[PyTree, PyTree, Array, Array], tuple[PyTree, PyTree, Any, Array]],
    evaluate_fn: Callable[[PyTree], dict[str, Array]],
) -> tuple[int, PyTree, PyTree, dict[str, float]]:
    """Run the chunks of one phase from ``step`` to ``total``: log, checkpoint, progress."""
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
            log.write(_log_row(phase, end, train, evaluated) + "\n")
            log.flush()
            _save_state(checkpoint, params, opt_state, end)
            bar.update(end - step)
            step = end
            bar.set_postfix({k: f"{v:.4g}" for k, v in {**train, **evaluated}.items()})
    finally:
        bar.close()
    if not evaluation and total > 0:  # resumed after the phase ended: evaluate its result
        evaluation = {k: float(v) for k, v in evaluate_fn(params).items()}
    return step, params, opt_state, evaluation
