"""Equinox modules only: policies, policy VAE, denoiser, diffusion maths.

Knows nothing of tasks or files.
"""

from models.critic import QNetwork, TwinCritic
from models.denoiser import (
    ConditionalDenoiser,
    MeasureEncoder,
    TextConditionEncoder,
    timestep_embedding,
)
from models.diffusion import (
    DiffusionSchedule,
    ODESample,
    classifier_free_guidance,
    cosine_schedule,
    ddim_sample,
    ddpm_sample,
    diffusion_loss,
    linear_schedule,
    ode_sample,
    q_sample,
)
from models.dynamics import DynamicsEnsemble, DynamicsMember
from models.policy import MLPPolicy, PolicySpec, flatten_population, unflatten_population
from models.policy_vae import (
    PolicyDecoder,
    PolicyEncoder,
    PolicyParameters,
    PolicyVAE,
    archive_statistics,
    count_parameters,
    kl_divergence,
    parameters_to_policy,
    policy_to_parameters,
    vae_loss,
)

__all__ = [
    "ConditionalDenoiser",
    "DiffusionSchedule",
    "DynamicsEnsemble",
    "DynamicsMember",
    "MLPPolicy",
    "MeasureEncoder",
    "ODESample",
    "PolicyDecoder",
    "PolicyEncoder",
    "PolicyParameters",
    "PolicySpec",
    "PolicyVAE",
    "QNetwork",
    "TextConditionEncoder",
    "TwinCritic",
    "archive_statistics",
    "classifier_free_guidance",
    "cosine_schedule",
    "count_parameters",
    "ddim_sample",
    "ddpm_sample",
    "diffusion_loss",
    "flatten_population",
    "kl_divergence",
    "linear_schedule",
    "ode_sample",
    "parameters_to_policy",
    "policy_to_parameters",
    "q_sample",
    "timestep_embedding",
    "unflatten_population",
    "vae_loss",
]
