"""The policy-VAE phase of a distillation: its settings, compiled chunk, evaluation, data.

The VAE trains on the archive's elites (their genomes as an :class:`MLPPolicy` population):
parameter reconstruction (in the archive-normalised space when ``archive_normalisation``)
+ ``kl_weight`` x KL, and optionally ``behaviour_weight`` x the squared difference of the
actions of original and decoded policies on observations visited by the elites (one
rollout of every elite in its task, made once before training). Adam, gradient clipping.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from models.policy import MLPPolicy, PolicySpec
from models.policy_vae import PolicyVAE, policy_to_parameters, vae_loss
from training import fit
from training.distill.config import DistillConfig, PhaseSettings
from zoo.archive_artifact import ArchiveArtifact

__all__ = [
    "STATES_POOL",
    "VAE_EVALUATION_ELITES",
    "VAESettings",
    "collect_states",
    "evaluate_vae",
    "evaluation_subset",
    "init_vae",
    "vae_chunk",
]

STATES_POOL = 4096
"""At most this many observations (from the elites' rollouts) feed the behaviour loss."""
VAE_EVALUATION_ELITES = 256
"""Elites the periodic VAE evaluation reconstructs (a fixed random subset when more)."""


@dataclasses.dataclass(frozen=True)
class VAESettings(PhaseSettings):
    """Static (hashed) settings of a compiled VAE chunk (Adam).

    Attributes:
        kl_weight, behaviour_weight: weights of the KL and action-matching terms.
        behaviour_states: observations per step for the action-matching term.
    """

    kl_weight: float
    behaviour_weight: float
    behaviour_states: int

    @classmethod
    def from_config(cls, config: DistillConfig) -> VAESettings:
        return cls(
            **config.phase_settings("vae"),
            kl_weight=float(config.kl_weight),
            behaviour_weight=float(config.behaviour_weight),
            behaviour_states=config.behaviour_states,
        )


@eqx.filter_jit
def vae_chunk(
    params: PolicyVAE,
    static: PolicyVAE,
    opt_state: PyTree,
    elites: MLPPolicy,
    states: Float[Array, "pool obs"] | None,
    key: PRNGKeyArray,
    start: Array,
    stop: Array,
    settings: VAESettings,
    mesh: Mesh | None = None,
) -> tuple[PolicyVAE, PyTree, dict[str, Array], Array]:
    """One chunk of VAE training (steps ``start .. start + length``, idle from ``stop``, the
    phase's length; see :func:`training.fit.scan_steps`). ``params`` holds the trainable
    arrays of the VAE, ``static`` the rest (archive statistics included); ``elites`` are
    ``[elites, ...]`` policies, ``states`` the observation pool of the behaviour term. With a
    ``mesh`` of several devices each step's elites are split over them (data parallelism,
    :func:`training.fit.split_rows`; every input replicated over ``mesh``)."""

    def minibatch(
        k_batch: PRNGKeyArray, k_states: PRNGKeyArray
    ) -> tuple[MLPPolicy, Float[Array, "n obs"] | None]:
        batch = fit.split_rows(fit.sample_rows(k_batch, elites, settings.batch_size), mesh)
        obs = None
        if states is not None:
            obs = fit.sample_rows(k_states, states, settings.behaviour_states)
        return batch, obs

    def loss(
        params: PolicyVAE, batch: tuple[MLPPolicy, Array | None], key: PRNGKeyArray
    ) -> tuple[Array, dict[str, Array]]:
        policies, obs = batch
        return vae_loss(
            eqx.combine(params, static), policies, key, settings.kl_weight, states=obs,
            behaviour_weight=settings.behaviour_weight,
        )  # fmt: skip

    optimiser = fit.optimiser(settings.optimiser, stop)
    step = fit.gradient_step(loss, optimiser, minibatch, batch_keys=2)
    return fit.scan_steps(step, params, opt_state, key, settings.length, start, stop)


@eqx.filter_jit
def evaluate_vae(
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
def init_vae(
    spec: PolicySpec, hyperparameters: tuple[tuple[str, Any], ...], key: PRNGKeyArray
) -> PolicyVAE:
    """A fresh VAE (one compiled program per spec and architecture)."""
    return PolicyVAE(spec, key=key, **dict(hyperparameters))


def evaluation_subset(elites: MLPPolicy, seed: int) -> MLPPolicy:
    """The elites the periodic evaluation reconstructs: all of them, or a fixed random subset
    of :data:`VAE_EVALUATION_ELITES` (in archive order)."""
    count = jax.tree_util.tree_leaves(elites)[0].shape[0]
    rows = np.random.default_rng(seed).permutation(count)
    rows = np.sort(rows[:VAE_EVALUATION_ELITES])
    return jax.tree_util.tree_map(lambda x: x[rows], elites)


def collect_states(archive: ArchiveArtifact, elites: MLPPolicy, seed: int) -> np.ndarray:
    """Up to :data:`STATES_POOL` observations visited by the elites in their task."""
    task = archive.make_task()
    key = jax.random.key(archive.config.get("evaluation", {}).get("seed", seed))
    evaluate = eqx.filter_jit(lambda g, k: task.evaluate(g, k, transitions=True).transitions)
    count = jax.tree_util.tree_leaves(elites)[0].shape[0]
    batch = min(count, 256)
    pools = []
    for begin in range(0, count, batch):
        index = np.arange(begin, begin + batch) % count  # the last batch wraps: one shape
        batch_elites = jax.tree_util.tree_map(lambda x, i=index: x[i], elites)
        transitions = evaluate(batch_elites, key)
        keep = min(batch, count - begin)
        obs = np.asarray(transitions.observations)[:keep]
        valid = np.asarray(transitions.valid)[:keep]
        pools.append(obs[valid])
    states = np.concatenate(pools)
    if states.shape[0] > STATES_POOL:
        rng = np.random.default_rng(seed)
        states = states[np.sort(rng.choice(states.shape[0], STATES_POOL, replace=False))]
    return states.astype(np.float32)
