"""The latent-diffusion phase of a distillation: its data, settings, compiled chunk and
evaluation.

Every elite is encoded (posterior mean); ``latent_scale`` = 1 / std of these latents; the
denoiser and the measure encoder are trained jointly (AdamW, gradient clipping) on (scaled
latents, elite descriptors normalised to ``[0, 1]`` by the archive bounds), dropping the
condition with probability ``condition_dropout`` (classifier-free guidance). The measure
encoder sees Fourier features of the measures (neighbouring cells can hold unrelated
policies). The diffusion phase is cheap next to the VAE's and needs many steps: with too
few, the probability-flow ODE sends a fraction of the requests to another elite's latent.

Text conditions (``condition="text"`` or ``"both"``, :func:`text_diffusion_chunk`): each
training row draws an elite and one of its texts' precomputed sentence embeddings
(:mod:`training.distill.text`); a :class:`~models.denoiser.TextConditionEncoder` maps it to
tokens. With ``"both"`` the measure tokens come first, then the text tokens, and each
modality is replaced by its own slice of the null condition with probability
``condition_dropout``, independently, so either can be given alone at sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from models.denoiser import ConditionalDenoiser, MeasureEncoder, TextConditionEncoder
from models.diffusion import DiffusionSchedule, diffusion_loss
from models.policy import MLPPolicy
from models.policy_vae import PolicyVAE
from training import fit
from training.distill.config import DistillConfig, PhaseSettings
from training.distill.text import TextConditions, draw_embeddings
from zoo.generator import condition_tokens, encode_means

__all__ = [
    "DIFFUSION_EVALUATION_ROWS",
    "X0_CLIP_MARGIN",
    "DiffusionSettings",
    "Latents",
    "diffusion_chunk",
    "evaluate_diffusion",
    "evaluate_text_diffusion",
    "init_diffusion",
    "init_text_diffusion",
    "scaled_latents",
    "text_diffusion_chunk",
]

X0_CLIP_MARGIN = 1.25
"""Sampling clips the implied clean scaled latent to this many times the largest absolute
scaled latent of the archive (``config["diffusion"]["clip_x0"]``, see
:func:`zoo.generator.clipped_eps_fn`)."""
DIFFUSION_EVALUATION_ROWS = 1024
"""Rows (elites repeated with fresh noise) of the fixed diffusion evaluation batch."""


@dataclasses.dataclass(frozen=True)
class Latents:
    """The elites' latents as the denoiser learns them.

    Attributes:
        latents: ``[elites, latent]`` posterior means times ``latent_scale``.
        latent_std: std of the unscaled means (over all elites and dimensions).
        latent_scale: ``1 / latent_std``.
        clip_x0: :data:`X0_CLIP_MARGIN` x the largest absolute scaled latent.
    """

    latents: Float[Array, "elites latent"]
    latent_std: float
    latent_scale: float
    clip_x0: float


def scaled_latents(vae: PolicyVAE, elites: MLPPolicy) -> Latents:
    """Encode ``elites`` (``[elites, ...]`` policies) and scale them to unit std."""
    means = encode_means(vae, elites)
    latent_std = float(jnp.std(means))
    latent_scale = 1.0 / max(latent_std, 1e-8)
    latents = means * latent_scale
    clip_x0 = X0_CLIP_MARGIN * float(jnp.max(jnp.abs(latents)))
    return Latents(latents, latent_std, latent_scale, clip_x0)


@dataclasses.dataclass(frozen=True)
class DiffusionSettings(PhaseSettings):
    """Static (hashed) settings of a compiled diffusion chunk (AdamW).

    Attributes:
        condition_dropout: probability of training a row with the null condition.
    """

    condition_dropout: float

    @classmethod
    def from_config(cls, config: DistillConfig) -> DiffusionSettings:
        return cls(
            **config.phase_settings("diffusion"),
            condition_dropout=float(config.condition_dropout),
        )


@eqx.filter_jit
def diffusion_chunk(
    params: tuple[ConditionalDenoiser, MeasureEncoder],
    static: tuple[ConditionalDenoiser, MeasureEncoder],
    opt_state: PyTree,
    latents: Float[Array, "elites latent"],
    conditions: Float[Array, "elites k"],
    schedule: DiffusionSchedule,
    key: PRNGKeyArray,
    start: Array,
    stop: Array,
    settings: DiffusionSettings,
    mesh: Mesh | None = None,
) -> tuple[Any, PyTree, dict[str, Array], Array]:
    """One chunk of denoiser + measure-encoder training on scaled latents and their
    normalised measures (see :func:`training.fit.scan_steps`); with a ``mesh`` of several
    devices each step's rows are split over them (:func:`training.fit.split_rows`)."""

    def minibatch(k_batch: PRNGKeyArray) -> tuple[Array, Array]:
        batch = fit.sample_rows(k_batch, (latents, conditions), settings.batch_size)
        return fit.split_rows(batch, mesh)

    def loss(
        params: Any, batch: tuple[Array, Array], key: PRNGKeyArray
    ) -> tuple[Array, dict[str, Array]]:
        x0, condition = batch
        denoiser, encoder = eqx.combine(params, static)
        tokens = jax.vmap(encoder)(condition)
        value = diffusion_loss(
            denoiser.batched, schedule, x0, tokens, key, null_condition=denoiser.null_condition,
            condition_dropout=settings.condition_dropout,
        )  # fmt: skip
        return value, {"loss": value}

    optimiser = fit.optimiser(settings.optimiser, stop)
    step = fit.gradient_step(loss, optimiser, minibatch)
    return fit.scan_steps(step, params, opt_state, key, settings.length, start, stop)


@eqx.filter_jit
def evaluate_diffusion(
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


@eqx.filter_jit
def init_diffusion(
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


TextModel = tuple[ConditionalDenoiser, MeasureEncoder | None, TextConditionEncoder]
"""The trained modules of a text-conditioned run: denoiser, measure encoder (``"both"``;
``None`` for ``"text"``) and text condition encoder."""


@eqx.filter_jit
def text_diffusion_chunk(
    params: Any,
    static: Any,
    opt_state: PyTree,
    latents: Float[Array, "elites latent"],
    conditions: Float[Array, "elites k"] | None,
    text: TextConditions,
    schedule: DiffusionSchedule,
    key: PRNGKeyArray,
    start: Array,
    stop: Array,
    settings: DiffusionSettings,
    mesh: Mesh | None = None,
) -> tuple[Any, PyTree, dict[str, Array], Array]:
    """One chunk of denoiser + condition-encoder training with text conditions (and the
    normalised measures with ``"both"``, else ``conditions=None``); see the module docstring
    and :func:`training.fit.scan_steps`; ``mesh`` as in :func:`diffusion_chunk`."""
    elites = latents.shape[0]

    def minibatch(k_rows: PRNGKeyArray, k_text: PRNGKeyArray) -> tuple[Any, ...]:
        rows = jax.random.randint(k_rows, (settings.batch_size,), 0, elites)
        measures = None if conditions is None else conditions[rows]
        return fit.split_rows((latents[rows], measures, draw_embeddings(k_text, text, rows)), mesh)

    def loss(
        params: Any, batch: tuple[Any, ...], key: PRNGKeyArray
    ) -> tuple[Array, dict[str, Array]]:
        x0, measures, embeddings = batch
        denoiser, measure_encoder, text_encoder = eqx.combine(params, static)
        k_loss, k_measures, k_text = jax.random.split(key, 3)
        shape = (x0.shape[0],)
        keep_text = jax.random.uniform(k_text, shape) >= settings.condition_dropout
        keep_measures = None
        if measure_encoder is not None:
            keep_measures = jax.random.uniform(k_measures, shape) >= settings.condition_dropout
        tokens = condition_tokens(
            denoiser, measure_encoder, text_encoder, measures, embeddings,
            keep_measures=keep_measures, keep_text=keep_text,
        )  # fmt: skip
        value = diffusion_loss(
            denoiser.batched, schedule, x0, tokens, k_loss, condition_dropout=0.0
        )
        return value, {"loss": value}

    optimiser = fit.optimiser(settings.optimiser, stop)
    step = fit.gradient_step(loss, optimiser, minibatch, batch_keys=2)
    return fit.scan_steps(step, params, opt_state, key, settings.length, start, stop)


@eqx.filter_jit
def evaluate_text_diffusion(
    denoiser: ConditionalDenoiser,
    measure_encoder: MeasureEncoder | None,
    text_encoder: TextConditionEncoder,
    latents: Float[Array, "rows latent"],
    conditions: Float[Array, "rows k"] | None,
    embeddings: Float[Array, "rows embedding"],
    schedule: DiffusionSchedule,
    key: PRNGKeyArray,
) -> dict[str, Array]:
    """Denoising loss on a fixed batch with every condition given (``loss``), with the null
    condition (``unconditional_loss``) and, with ``"both"``, with the text alone
    (``text_loss``) and the measures alone (``measures_loss``)."""
    kwargs = {"condition_dropout": 0.0}
    encoders = (denoiser, measure_encoder, text_encoder)
    batch = latents.shape[0]
    given = condition_tokens(*encoders, conditions, embeddings)
    null = jnp.broadcast_to(denoiser.null_condition, given.shape)
    out = {
        "loss": diffusion_loss(denoiser.batched, schedule, latents, given, key, **kwargs),
        "unconditional_loss": diffusion_loss(
            denoiser.batched, schedule, latents, null, key, **kwargs
        ),
    }
    if measure_encoder is not None:
        drop = jnp.zeros((batch,), bool)
        for name, keep in (("text_loss", (drop, None)), ("measures_loss", (None, drop))):
            tokens = condition_tokens(
                *encoders, conditions, embeddings, keep_measures=keep[0], keep_text=keep[1]
            )
            out[name] = diffusion_loss(denoiser.batched, schedule, latents, tokens, key, **kwargs)
    return out


@eqx.filter_jit
def init_text_diffusion(
    denoiser: tuple[tuple[str, Any], ...],
    measure_encoder: tuple[tuple[str, Any], ...] | None,
    text_encoder: tuple[tuple[str, Any], ...],
    key: PRNGKeyArray,
) -> TextModel:
    """A fresh denoiser, measure encoder (``None`` without measures) and text condition
    encoder."""
    k_denoiser, k_measures, k_text = jax.random.split(key, 3)
    return (
        ConditionalDenoiser(key=k_denoiser, **dict(denoiser)),
        None
        if measure_encoder is None
        else MeasureEncoder(key=k_measures, **dict(measure_encoder)),
        TextConditionEncoder(key=k_text, **dict(text_encoder)),
    )
