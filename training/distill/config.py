"""The settings of a distillation run: :class:`DistillConfig`, its defaults and validation."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

from models.denoiser import ConditionalDenoiser, MeasureEncoder, TextConditionEncoder
from models.policy_vae import PolicyVAE
from training import fit
from zoo.errors import ConfigError
from zoo.serialization import dataclass_from_dict

__all__ = [
    "CONDITION_CHOICES",
    "DEFAULT_CONDITION_ENCODER",
    "DEFAULT_DENOISER",
    "DEFAULT_TEXT_CONDITION_ENCODER",
    "DEFAULT_VAE",
    "DistillConfig",
    "PhaseSettings",
]

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

DEFAULT_TEXT_CONDITION_ENCODER: dict[str, Any] = {
    "num_tokens": 4,
    "width": 128,
}
""":class:`TextConditionEncoder` keyword arguments (the embedding size follows the sentence
encoder, the token size is ``condition_encoder["token_size"]``, shared by every condition)."""

CONDITION_CHOICES = ("measures", "text", "both")
"""What a distilled denoiser can be conditioned on (``DistillConfig.condition``)."""

_CONDITION_FIELDS = ("condition", "text_condition_encoder")
"""Fields a measures-only config leaves out of :meth:`DistillConfig.to_dict` (so its run
record and the generator's ``training.config`` are those of qdzoo before text conditions)."""


_DERIVED = {
    "vae": ("self", "spec", "key", "archive_normalisation"),
    "denoiser": ("self", "key", "latent_size", "condition_size", "num_condition_tokens"),
    "condition_encoder": ("self", "key", "measure_size"),
    "text_condition_encoder": ("self", "key", "embedding_size", "token_size"),
}
"""Constructor arguments that are not hyperparameters of a :class:`DistillConfig` dict (they
follow the archive, the VAE or the condition encoder, or have their own field)."""


def _valid_keys(kind: str) -> set[str]:
    cls = {
        "vae": PolicyVAE,
        "denoiser": ConditionalDenoiser,
        "condition_encoder": MeasureEncoder,
        "text_condition_encoder": TextConditionEncoder,
    }
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
            (:data:`DEFAULT_CONDITION_ENCODER`); its ``token_size`` is the width of every
            condition token.
        condition: ``"measures"`` (the denoiser is conditioned on the elites' measures),
            ``"text"`` (on sentence embeddings of their labels, ``qdzoo label``) or
            ``"both"`` (measure tokens then text tokens; each modality dropped
            independently, so either can be given alone when sampling).
        text_condition_encoder: :class:`TextConditionEncoder` hyperparameters
            (:data:`DEFAULT_TEXT_CONDITION_ENCODER`), used with text conditions.
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
        condition_dropout: probability of training a row with the null condition (with
            ``"both"``: of dropping each modality to its slice of it, independently).
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
    condition: str = "measures"
    text_condition_encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
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
        object.__setattr__(
            self,
            "text_condition_encoder",
            _merge(
                "text_condition_encoder",
                DEFAULT_TEXT_CONDITION_ENCODER,
                self.text_condition_encoder,
            ),
        )
        if self.condition not in CONDITION_CHOICES:
            raise ConfigError(
                f"condition must be one of {', '.join(CONDITION_CHOICES)}, got {self.condition!r}"
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

    def phase_settings(self, phase: str) -> dict[str, Any]:
        """The :class:`PhaseSettings` fields of ``phase``: ``length`` (optimiser steps per
        chunk), ``batch_size`` and ``optimiser`` of ``phase`` (``"vae"``: Adam;
        ``"diffusion"``: AdamW with ``weight_decay``; both clipped, both on ``lr_schedule``)."""
        return {
            "length": min(self.chunk, max(getattr(self, f"{phase}_steps"), 1)),
            "batch_size": self.batch_size,
            "optimiser": fit.OptimiserConfig(
                learning_rate=float(getattr(self, f"{phase}_lr")),
                grad_clip=float(self.grad_clip),
                weight_decay=float(self.weight_decay) if phase == "diffusion" else None,
                schedule=self.lr_schedule,
            ),
        }

    @property
    def conditions(self) -> tuple[str, ...]:
        """The generator's conditions: ``("measures",)``, ``("text",)`` or both."""
        return ("measures", "text") if self.condition == "both" else (self.condition,)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict (``condition`` and ``text_condition_encoder`` left out when
        conditioned on measures alone: the dict of qdzoo before text conditions)."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        if self.condition == "measures":
            for name in _CONDITION_FIELDS:
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        return dataclass_from_dict(cls, d, "distillation config")


@dataclasses.dataclass(frozen=True)
class PhaseSettings:
    """Static (hashed) settings of a phase's compiled chunk; each phase adds its loss's
    (:class:`~training.distill.vae.VAESettings`,
    :class:`~training.distill.diffusion.DiffusionSettings`).

    Attributes:
        length: optimiser steps per chunk.
        batch_size: elites per step (drawn with replacement).
        optimiser: clipping, Adam(W), learning-rate schedule.
    """

    length: int
    batch_size: int
    optimiser: fit.OptimiserConfig
