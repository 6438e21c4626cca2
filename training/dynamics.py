"""Learned dynamics for model-based QD: fitting an ensemble on real transitions, predicting.

A :class:`DynamicsModel` is a :class:`models.dynamics.DynamicsEnsemble` of ``E`` MLPs plus
the normalisation statistics it was fitted with. It works on a task's flat *model state*
``x [d]`` (``task.model_state``: everything the observation, reward, termination and
descriptor need) and predicts the next model state from ``(x, action)``.

What a fit does (:func:`fit_dynamics`, one jit-compatible call on a
:class:`training.replay.ReplayBuffer` of :class:`DynamicsData` rows):

- **normalisation**: the inputs ``concat(x, action)`` and the targets, the state delta
  ``x' - x`` (and the reward when ``predict_reward``), are standardised with the mean and
  standard deviation of the buffer's filled rows (a constant column keeps std 1). The
  statistics are refitted on every call and stored in the model; the members predict in
  normalised units and :func:`predict_step` maps back to state units.
- **held-out split**: a fresh random ``holdout`` fraction of the filled rows (at most
  ``max_holdout_rows``) is kept out of training and scores the model.
- **bootstrap**: every gradient step draws ``batch_size`` rows *per member*, uniformly with
  replacement from the training rows, independently for each member, so that the members
  see different data and disagree where data is scarce (the epistemic part of the spread).
- **loss**: with ``probabilistic=True`` the Gaussian negative log-likelihood of the
  normalised targets under each member's ``(mean, std)``, averaged over output dimensions,
  rows and members, plus ``0.01 * (max - min)`` of the learnable log-variance bounds (PETS)
  that softly clamp the predicted std; with ``probabilistic=False`` the mean squared error
  of the means (a deterministic ensemble). Adam (AdamW with ``weight_decay``), a fresh
  optimiser state on every call; the parameters start from the given model (warm start).
- **early stopping**: every ``eval_every`` steps the held-out loss (the same NLL or MSE,
  without the bound penalty) is computed; a check *improves* when it is below the best so
  far by more than ``min_improvement`` times the best's magnitude. The fit stops after
  ``patience`` checks in a row without improvement, or after ``steps`` steps, and returns
  the parameters of the best check (the starting parameters count as the check at step 0).

Imagined rollouts (:func:`predict_step`, :func:`imagination_step`,
:class:`zoo.tasks.imagined.ImaginedTask`) draw the next state from one member per row:
``members[b]`` predicts row ``b``. **TS-inf** keeps one member per episode for the whole
episode (drawn at reset); **TS-1** draws the members afresh at every step (PETS trajectory
sampling). With ``sample=True`` the next state is drawn from that member's Gaussian,
otherwise its mean is used::

    config = DynamicsConfig(hidden_sizes=(64, 64), steps=500)
    model = init_dynamics(key, config, state_size=2, action_size=2)
    buffer = replay.add(replay.init(DynamicsData.zeros(2, 2), 100_000), rows)
    model, metrics = fit_dynamics(key, model, config, buffer)
    imagined = ImaginedTask(task, imagination_step(model), members=config.members)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from models.dynamics import DynamicsEnsemble
from models.policy import ACTIVATIONS
from training import fit
from training.replay import ReplayBuffer
from zoo.errors import ConfigError, ShapeError
from zoo.tasks.base import Transitions

__all__ = [
    "BOUND_PENALTY",
    "DynamicsConfig",
    "DynamicsData",
    "DynamicsModel",
    "ensemble_std",
    "fit_dynamics",
    "imagination_step",
    "init_dynamics",
    "predict_step",
    "transitions_to_data",
]

BOUND_PENALTY = 0.01
"""Weight of ``sum(max_log_var) - sum(min_log_var)`` in the probabilistic loss (PETS)."""
_MIN_STD = 1e-6
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Hyperparameters of a dynamics ensemble and of its fit (hashable: a static argument).

    Attributes:
        members: the number ``E`` of ensemble members.
        hidden_sizes: hidden widths of every member.
        probabilistic: Gaussian outputs trained by negative log-likelihood; ``False``: a
            deterministic ensemble trained by mean squared error (its std is ignored).
        predict_reward: also predict the reward (for tasks whose reward is not a function
            of the model state).
        learning_rate: Adam learning rate.
        batch_size: rows per member per gradient step (bootstrap: drawn per member).
        steps: the most gradient steps of one fit.
        holdout: the fraction of the filled rows held out for early stopping (0: none; the
            fit then runs ``steps`` steps and keeps the last parameters).
        eval_every: gradient steps between held-out checks.
        patience: checks in a row without improvement before the fit stops.
        weight_decay: AdamW decoupled weight decay (0: Adam).
        activation: hidden activation of the members (``"silu"``, i.e. swish, or ``"relu"``).
        min_improvement: a check improves when its held-out loss is below the best by more
            than this fraction of the best's magnitude.
        max_holdout_rows: the most held-out rows (what one check costs).
    """

    members: int = 4
    hidden_sizes: tuple[int, ...] = (512, 512)
    probabilistic: bool = True
    predict_reward: bool = False
    learning_rate: float = 1e-3
    batch_size: int = 256
    steps: int = 1000
    holdout: float = 0.1
    eval_every: int = 50
    patience: int = 5
    weight_decay: float = 0.0
    activation: str = "silu"
    min_improvement: float = 0.01
    max_holdout_rows: int = 5000

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(
                f"hidden_sizes must be positive widths, got {self.hidden_sizes}; pass e.g. "
                "(512, 512)"
            )
        for name in ("members", "batch_size", "steps", "eval_every", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_holdout_rows, int) or self.max_holdout_rows < 1:
            raise ConfigError(
                f"max_holdout_rows must be a positive integer, got {self.max_holdout_rows!r}"
            )
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ConfigError(
                f"learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        if not 0 <= self.holdout < 1:
            raise ConfigError(
                f"holdout must be a fraction in [0, 1), got {self.holdout!r}; e.g. 0.1 keeps "
                "10% of the rows out of training for early stopping"
            )
        if not self.weight_decay >= 0 or not self.min_improvement >= 0:
            raise ConfigError(
                f"weight_decay and min_improvement must be >= 0, got {self.weight_decay!r} "
                f"and {self.min_improvement!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}"
            )

    def holdout_rows(self, capacity: int) -> int:
        """The most held-out rows of a buffer of ``capacity`` rows (static):
        ``ceil(holdout * capacity)``, at most ``max_holdout_rows``."""
        return min(self.max_holdout_rows, math.ceil(self.holdout * capacity))


class DynamicsData(eqx.Module):
    """Real transitions in model-state space, one row each (a replay buffer adds ``[N]``).

    Attributes:
        states: ``[d]`` the model state before the step (``task.model_state``).
        actions: ``[a]`` the action taken.
        next_states: ``[d]`` the model state after the step.
        rewards: ``[]`` the step's reward (used with ``predict_reward``).
    """

    states: Float[Array, "*rows d"]
    actions: Float[Array, "*rows a"]
    next_states: Float[Array, "*rows d"]
    rewards: Float[Array, "*rows"]

    @classmethod
    def zeros(cls, state_size: int, action_size: int) -> DynamicsData:
        """One row of zeros: the template of :func:`training.replay.init`."""
        return cls(
            states=jnp.zeros((state_size,), jnp.float32),
            actions=jnp.zeros((action_size,), jnp.float32),
            next_states=jnp.zeros((state_size,), jnp.float32),
            rewards=jnp.zeros((), jnp.float32),
        )


def transitions_to_data(
    transitions: Transitions,
) -> tuple[DynamicsData, Bool[Array, " rows"]]:
    """The ``[B, T, ...]`` transitions of an evaluation as rows ``[B * T, ...]`` and the mask
    of their valid steps ``[B * T]`` (what :func:`training.replay.add` keeps).

    The rows hold the transitions' model states when they carry them (tasks with the
    model-based interface), else their observations (valid where the observation *is* the
    model state)."""
    batch, time = transitions.rewards.shape
    rows = batch * time
    states = getattr(transitions, "model_states", None)
    next_states = getattr(transitions, "next_model_states", None)
    if states is None or next_states is None:
        states, next_states = transitions.observations, transitions.next_observations
    data = DynamicsData(
        states=states.reshape(rows, -1),
        actions=transitions.actions.reshape(rows, -1),
        next_states=next_states.reshape(rows, -1),
        rewards=transitions.rewards.reshape(rows),
    )
    return data, transitions.valid.reshape(rows)


class DynamicsModel(eqx.Module):
    """A dynamics ensemble and the normalisation it was fitted with.

    Attributes:
        ensemble: the ``E`` members, in normalised units.
        input_mean / input_std: ``[d + a]`` statistics of ``concat(state, action)``.
        delta_mean / delta_std: ``[d]`` statistics of the state delta ``x' - x``.
        reward_mean / reward_std: ``[]`` statistics of the reward (used with
            ``predict_reward``).
        probabilistic: sample from the members' Gaussians (``False``: always the mean).
        predict_reward: the members also predict the reward (output ``d + 1``).
    """

    ensemble: DynamicsEnsemble
    input_mean: Float[Array, " inputs"]
    input_std: Float[Array, " inputs"]
    delta_mean: Float[Array, " d"]
    delta_std: Float[Array, " d"]
    reward_mean: Float[Array, ""]
    reward_std: Float[Array, ""]
    probabilistic: bool = eqx.field(static=True)
    predict_reward: bool = eqx.field(static=True)

    @property
    def state_size(self) -> int:
        """The model-state size ``d``."""
        return int(self.delta_mean.shape[-1])

    @property
    def action_size(self) -> int:
        """The action size ``a``."""
        return int(self.input_mean.shape[-1]) - self.state_size

    @property
    def members(self) -> int:
        """The number ``E`` of ensemble members."""
        return self.ensemble.size

    def normalised_outputs(
        self, states: Float[Array, "batch d"], actions: Float[Array, "batch a"]
    ) -> tuple[Float[Array, "members batch out"], Float[Array, "members batch out"]]:
        """Every member's ``(mean, log_std)`` ``[E, B, out]`` (normalised units) on the rows
        ``(states [B, d], actions [B, a])``."""
        return self.ensemble.all_members(self.normalised_inputs(states, actions))

    def normalised_inputs(
        self, states: Float[Array, "batch d"], actions: Float[Array, "batch a"]
    ) -> Float[Array, "batch in"]:
        """The rows ``concat(states, actions)`` standardised with the fitted statistics."""
        _check_rows(self, states, actions)
        return (jnp.concatenate([states, actions], axis=-1) - self.input_mean) / self.input_std


def init_dynamics(
    key: PRNGKeyArray, config: DynamicsConfig, state_size: int, action_size: int
) -> DynamicsModel:
    """A fresh model for ``[state_size]`` model states and ``[action_size]`` actions, with
    identity normalisation (fit it with :func:`fit_dynamics` before predicting).

    Raises:
        ConfigError: a size below 1.
    """
    if not all(isinstance(s, int) and s >= 1 for s in (state_size, action_size)):
        raise ConfigError(
            f"a dynamics model needs positive integer sizes, got state_size={state_size!r} "
            f"and action_size={action_size!r}; pass task.model_state_size and "
            "task.spec.action_size"
        )
    inputs = state_size + action_size
    outputs = state_size + int(config.predict_reward)
    ensemble = DynamicsEnsemble(
        inputs, outputs, config.members, config.hidden_sizes, config.activation, key=key
    )
    return DynamicsModel(
        ensemble=ensemble,
        input_mean=jnp.zeros((inputs,), jnp.float32),
        input_std=jnp.ones((inputs,), jnp.float32),
        delta_mean=jnp.zeros((state_size,), jnp.float32),
        delta_std=jnp.ones((state_size,), jnp.float32),
        reward_mean=jnp.zeros((), jnp.float32),
        reward_std=jnp.ones((), jnp.float32),
        probabilistic=config.probabilistic,
        predict_reward=config.predict_reward,
    )


# ---------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------


def _statistics(
    x: Float[Array, "rows n"], filled: Bool[Array, " rows"], count: Int[Array, ""]
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Mean and std of the filled rows of ``x`` (std 1 where a column is constant)."""
    denominator = jnp.maximum(count, 1).astype(x.dtype)
    mask = filled[:, None]
    mean = jnp.sum(jnp.where(mask, x, 0.0), axis=0) / denominator
    variance = jnp.sum(jnp.where(mask, jnp.square(x - mean), 0.0), axis=0) / denominator
    std = jnp.sqrt(variance)
    return mean, jnp.where(std < _MIN_STD, 1.0, std)


def _member_losses(
    mean: Float[Array, "members rows out"],
    log_std: Float[Array, "members rows out"],
    targets: Float[Array, "members rows out"],
    weights: Float[Array, " rows"],
    probabilistic: bool,
) -> tuple[Float[Array, " members"], Float[Array, " members"]]:
    """Per member: the weighted mean over rows (and output dims) of the loss (NLL or
    squared error) and of the squared error, in normalised units."""
    error = jnp.square(targets - mean)
    if probabilistic:
        per_dim = 0.5 * error * jnp.exp(-2.0 * log_std) + log_std + _HALF_LOG_TWO_PI
    else:
        per_dim = error
    total = jnp.maximum(jnp.sum(weights), 1.0)
    loss = jnp.sum(jnp.mean(per_dim, axis=-1) * weights, axis=-1) / total
    squared = jnp.sum(jnp.mean(error, axis=-1) * weights, axis=-1) / total
    return loss, squared


def _normalise(
    model: DynamicsModel, data: DynamicsData, count: Int[Array, ""]
) -> tuple[DynamicsModel, Float[Array, "rows inputs"], Float[Array, "rows out"]]:
    """``model`` with normalisers fitted on the first ``count`` rows of ``data``, and every
    row's normalised inputs and targets (the state delta, then the reward if predicted)."""
    filled = jnp.arange(data.rewards.shape[0]) < count
    inputs = jnp.concatenate([data.states, data.actions], axis=-1)
    deltas = data.next_states - data.states
    input_mean, input_std = _statistics(inputs, filled, count)
    delta_mean, delta_std = _statistics(deltas, filled, count)
    reward_mean, reward_std = _statistics(data.rewards[:, None], filled, count)
    targets = (deltas - delta_mean) / delta_std
    if model.predict_reward:
        reward_target = (data.rewards[:, None] - reward_mean) / reward_std
        targets = jnp.concatenate([targets, reward_target], axis=-1)
    model = dataclasses.replace(
        model,
        input_mean=input_mean,
        input_std=input_std,
        delta_mean=delta_mean,
        delta_std=delta_std,
        reward_mean=reward_mean[0],
        reward_std=reward_std[0],
    )
    return model, (inputs - input_mean) / input_std, targets


def _split(
    key: PRNGKeyArray, config: DynamicsConfig, capacity: int, count: Int[Array, ""]
) -> tuple[Int[Array, " rows"], Int[Array, ""], int]:
    """A random split of the ``count`` filled rows of a buffer of ``capacity`` rows.

    Returns:
        ``(order, n_holdout, scored)``: the row indices, filled rows first in random order
        (``order[:n_holdout]`` held out, ``order[n_holdout:count]`` for training); the
        number of held-out rows (``round(holdout * count)``, at least 1 when ``holdout >
        0`` and ``count >= 2``, at most ``scored`` and ``count - 1``); and the static bound
        ``scored`` on it (:meth:`DynamicsConfig.holdout_rows`).
    """
    filled = jnp.arange(capacity) < count
    order = jnp.argsort(jnp.where(filled, jax.random.uniform(key, (capacity,)), 2.0))
    scored = config.holdout_rows(capacity)
    wanted = jnp.round(config.holdout * count).astype(jnp.int32)
    n_holdout = jnp.clip(wanted, min(1, scored), jnp.minimum(scored, count - 1))
    return order, jnp.maximum(n_holdout, 0), scored


class _Search(NamedTuple):
    """The carry of the early-stopping loop."""

    ensemble: DynamicsEnsemble
    opt_state: Any
    best: DynamicsEnsemble
    best_loss: Float[Array, ""]
    best_mse: Float[Array, ""]
    stale: Int[Array, ""]
    steps_run: Int[Array, ""]
    train_loss: Float[Array, ""]


@eqx.filter_jit
def fit_dynamics(
    key: PRNGKeyArray, model: DynamicsModel, config: DynamicsConfig, buffer: ReplayBuffer
) -> tuple[DynamicsModel, dict[str, Array]]:
    """Fit ``model`` on the filled rows of ``buffer`` (see the module docstring).

    Jit-compatible (static shapes: the buffer's capacity; its fill count may be traced):
    call it inside an emitter's ``tell``. The normalisers are refitted on the data, the
    parameters start from ``model``'s, the Adam state is fresh. An empty buffer leaves the
    parameters unchanged (no step runs).

    Args:
        key: split randomness, minibatches.
        model: the model to start from (:func:`init_dynamics`, or a previous fit).
        config: the fit's hyperparameters; ``probabilistic`` and ``predict_reward`` must
            be those ``model`` was made with.
        buffer: a replay buffer of :class:`DynamicsData` rows of ``model``'s sizes.

    Returns:
        ``(model, metrics)``: the best parameters with the new normalisers, and scalar
        metrics ``train_loss`` (mean loss over the last ``eval_every`` steps run),
        ``holdout_loss`` (the returned parameters' held-out NLL or MSE, normalised units;
        NaN without held-out rows), ``holdout_mse`` (their held-out mean squared error of
        the next state, state units, mean over members; NaN without held-out rows) and
        ``steps_run`` (int32).

    Raises:
        ConfigError: ``config`` disagrees with ``model`` on ``probabilistic`` or
            ``predict_reward``.
        ShapeError: the buffer does not hold :class:`DynamicsData` of ``model``'s sizes.
    """
    _check_fit_arguments(model, config, buffer)
    capacity, count = buffer.capacity, buffer.count
    state_size, members = model.state_size, model.members
    k_split, k_train = jax.random.split(key)
    model, inputs, targets = _normalise(model, buffer.data, count)
    delta_std = model.delta_std
    order, n_holdout, scored = _split(k_split, config, capacity, count)
    n_train = jnp.maximum(count - n_holdout, 1)

    def minibatch(key: PRNGKeyArray) -> tuple[Array, Array]:
        rows = order[n_holdout + jax.random.randint(key, (members, config.batch_size), 0, n_train)]
        return inputs[rows], targets[rows]

    def loss(
        ensemble: DynamicsEnsemble, batch: tuple[Array, Array], key: PRNGKeyArray
    ) -> tuple[Array, dict[str, Array]]:
        del key
        mean, log_std = ensemble(batch[0])
        weights = jnp.ones(batch[0].shape[1], jnp.float32)
        losses, _ = _member_losses(mean, log_std, batch[1], weights, config.probabilistic)
        value = jnp.mean(losses)
        if config.probabilistic:
            bounds = ensemble.members.max_log_std - ensemble.members.min_log_std
            value = value + BOUND_PENALTY * 2.0 * jnp.sum(bounds) / members
        return value, {"loss": value}

    holdout_index = order[: max(scored, 1)]
    holdout_weights = (jnp.arange(max(scored, 1)) < n_holdout).astype(jnp.float32)
    holdout_inputs, holdout_targets = inputs[holdout_index], targets[holdout_index]
    has_holdout = n_holdout > 0

    def score(ensemble: DynamicsEnsemble) -> tuple[Array, Array]:
        mean, log_std = ensemble.all_members(holdout_inputs)
        target = jnp.broadcast_to(holdout_targets, mean.shape)
        losses, _ = _member_losses(mean, log_std, target, holdout_weights, config.probabilistic)
        error = jnp.square((mean - target)[..., :state_size] * delta_std)
        mse = jnp.sum(jnp.mean(error, axis=-1) * holdout_weights, axis=-1)
        mse = mse / jnp.maximum(jnp.sum(holdout_weights), 1.0)
        return jnp.mean(losses), jnp.mean(mse)

    settings = fit.OptimiserConfig(
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay if config.weight_decay > 0 else None,
    )
    optimiser = fit.optimiser(settings)
    step = fit.gradient_step(loss, optimiser, minibatch)

    def keep_going(search: _Search) -> Array:
        return (search.steps_run < config.steps) & (search.stale < config.patience) & (count > 0)

    def chunk(search: _Search) -> _Search:
        ensemble, opt_state, metrics, taken = fit.scan_steps(
            step,
            search.ensemble,
            search.opt_state,
            k_train,
            config.eval_every,
            start=search.steps_run,
            stop=config.steps,
        )
        train_loss = jnp.sum(metrics["loss"]) / jnp.maximum(jnp.sum(taken), 1)
        holdout_loss, holdout_mse = score(ensemble)
        threshold = search.best_loss - config.min_improvement * jnp.abs(search.best_loss)
        improved = ~has_holdout | (holdout_loss < threshold)
        best = jax.tree_util.tree_map(
            lambda new, old: jnp.where(improved, new, old), ensemble, search.best
        )
        return _Search(
            ensemble=ensemble,
            opt_state=opt_state,
            best=best,
            best_loss=jnp.where(improved, holdout_loss, search.best_loss),
            best_mse=jnp.where(improved, holdout_mse, search.best_mse),
            stale=jnp.where(improved, 0, search.stale + 1),
            steps_run=jnp.minimum(search.steps_run + config.eval_every, config.steps),
            train_loss=train_loss,
        )

    initial_loss, initial_mse = score(model.ensemble)
    search = jax.lax.while_loop(
        keep_going,
        chunk,
        _Search(
            ensemble=model.ensemble,
            opt_state=optimiser.init(model.ensemble),
            best=model.ensemble,
            best_loss=initial_loss,
            best_mse=initial_mse,
            stale=jnp.zeros((), jnp.int32),
            steps_run=jnp.zeros((), jnp.int32),
            train_loss=jnp.full((), jnp.nan, jnp.float32),
        ),
    )
    nan = jnp.full((), jnp.nan, jnp.float32)
    metrics = {
        "train_loss": search.train_loss,
        "holdout_loss": jnp.where(has_holdout, search.best_loss, nan),
        "holdout_mse": jnp.where(has_holdout, search.best_mse, nan),
        "steps_run": search.steps_run,
    }
    return dataclasses.replace(model, ensemble=search.best), metrics


# ---------------------------------------------------------------------------------------
# Predicting
# ---------------------------------------------------------------------------------------


def predict_step(
    model: DynamicsModel,
    key: PRNGKeyArray,
    states: Float[Array, "batch d"],
    actions: Float[Array, "batch a"],
    members: Int[Array, " batch"],
    *,
    sample: bool = True,
) -> tuple[Float[Array, "batch d"], Float[Array, " batch"] | None]:
    """The next model states (and rewards) predicted by one member per row.

    Row ``b`` is predicted by member ``members[b]``. When every member owns exactly
    ``B / E`` rows (what :func:`zoo.tasks.imagined.draw_members` draws when ``E`` divides
    ``B``), each member runs on its own rows only: the cost of one member on ``B`` rows.
    Otherwise every member runs on every row and each row keeps its member's prediction
    (the cost of all ``E`` members). Both give the same prediction up to float rounding.
    TS-inf: pass the same ``members`` at every step of an episode; TS-1: draw them afresh at
    every step.

    Args:
        model: a fitted :class:`DynamicsModel`.
        key: sampling randomness (unused with ``sample=False`` or a deterministic model).
        states: ``[B, d]`` model states.
        actions: ``[B, a]`` actions.
        members: ``[B]`` int member index per row, in ``[0, E)``.
        sample: draw from the member's Gaussian (probabilistic models); ``False``: its mean.

    Returns:
        ``(next_states [B, d], rewards [B])``; ``rewards`` is ``None`` unless the model
        predicts the reward.

    Raises:
        ShapeError: the rows' sizes differ from the model's, or ``members`` is not ``[B]``.
    """
    batch = states.shape[0]
    if jnp.shape(members) != (batch,):
        raise ShapeError(
            f"members must hold one member index per row, shape ({batch},), got "
            f"{jnp.shape(members)}; draw them with zoo.tasks.imagined.draw_members(key, "
            f"{batch}, E)"
        )
    mean, log_std = _member_outputs(model, model.normalised_inputs(states, actions), members)
    if sample and model.probabilistic:
        mean = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    next_states = states + model.delta_mean + model.delta_std * mean[:, : model.state_size]
    rewards = None
    if model.predict_reward:
        rewards = model.reward_mean + model.reward_std * mean[:, model.state_size]
    return next_states, rewards


def _member_outputs(
    model: DynamicsModel, inputs: Float[Array, "batch in"], members: Int[Array, " batch"]
) -> tuple[Float[Array, "batch out"], Float[Array, "batch out"]]:
    """``(mean, log_std)`` of row ``b`` under member ``members[b]`` (normalised units)."""
    batch, size = inputs.shape[0], model.members
    rows = jnp.arange(batch)

    def every_member(inputs: Array) -> tuple[Array, Array]:
        mean, log_std = model.ensemble.all_members(inputs)
        return mean[members, rows], log_std[members, rows]

    if batch % size:
        return every_member(inputs)

    def own_rows(inputs: Array) -> tuple[Array, Array]:
        # Sorted by member, the rows form E groups of B / E: group e is member e's.
        order = jnp.argsort(members, stable=True)
        grouped = inputs[order].reshape(size, batch // size, -1)
        mean, log_std = model.ensemble(grouped)
        inverse = jnp.zeros_like(order).at[order].set(rows)
        return mean.reshape(batch, -1)[inverse], log_std.reshape(batch, -1)[inverse]

    balanced = jnp.all(jnp.bincount(members, length=size) == batch // size)
    return jax.lax.cond(balanced, own_rows, every_member, inputs)


def ensemble_std(
    model: DynamicsModel, states: Float[Array, "batch d"], actions: Float[Array, "batch a"]
) -> Float[Array, "batch d"]:
    """The spread of the ensemble's next-state prediction, state units ``[B, d]``: the
    standard deviation of the mixture of the members' Gaussians, i.e. the square root of
    the variance of the members' means (epistemic) plus their mean variance (aleatoric;
    zero for a deterministic model)."""
    mean, log_std = model.normalised_outputs(states, actions)
    variance = jnp.var(mean, axis=0)
    if model.probabilistic:
        variance = variance + jnp.mean(jnp.exp(2.0 * log_std), axis=0)
    return jnp.sqrt(variance[:, : model.state_size]) * model.delta_std


def imagination_step(
    model: DynamicsModel, *, sample: bool = True
) -> Callable[..., Float[Array, "batch d"] | tuple[Array, Array]]:
    """``model_step(key, x [B, d], actions [B, a], members [B]) -> next_x [B, d]`` for
    :class:`zoo.tasks.imagined.ImaginedTask`; a model that predicts the reward returns
    ``(next_x, reward [B])`` (the imagined task then uses that reward)."""

    def model_step(
        key: PRNGKeyArray, states: Array, actions: Array, members: Array
    ) -> Array | tuple[Array, Array]:
        next_states, rewards = predict_step(model, key, states, actions, members, sample=sample)
        return next_states if rewards is None else (next_states, rewards)

    return model_step


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def _check_rows(model: DynamicsModel, states: Array, actions: Array) -> None:
    d, a = model.state_size, model.action_size
    if (
        jnp.ndim(states) != 2
        or jnp.ndim(actions) != 2
        or states.shape[1] != d
        or actions.shape != (states.shape[0], a)
    ):
        raise ShapeError(
            f"the dynamics model expects states [B, {d}] and actions [B, {a}], got "
            f"{jnp.shape(states)} and {jnp.shape(actions)}; pass task.model_state(...) rows "
            "and the policies' actions with one leading batch axis"
        )


def _check_fit_arguments(
    model: DynamicsModel, config: DynamicsConfig, buffer: ReplayBuffer
) -> None:
    for name in ("probabilistic", "predict_reward"):
        if getattr(model, name) != getattr(config, name):
            raise ConfigError(
                f"the config has {name}={getattr(config, name)} but the model was made with "
                f"{name}={getattr(model, name)}; fit with the config the model was built from "
                "(init_dynamics(key, config, ...))"
            )
    data = buffer.data
    d, a = model.state_size, model.action_size
    if not isinstance(data, DynamicsData):
        raise ShapeError(
            f"fit_dynamics expects a replay buffer of DynamicsData rows, got one of "
            f"{type(data).__name__}; build it with replay.init(DynamicsData.zeros({d}, {a}), "
            "capacity)"
        )
    shapes = (data.states.shape[1:], data.actions.shape[1:], data.next_states.shape[1:])
    if shapes != ((d,), (a,), (d,)) or data.rewards.shape[1:] != ():
        raise ShapeError(
            f"the buffer holds states {data.states.shape[1:]}, actions "
            f"{data.actions.shape[1:]}, next states {data.next_states.shape[1:]} and rewards "
            f"{data.rewards.shape[1:]} per row; the model expects ({d},), ({a},), ({d},) and "
            f"(); build the buffer with DynamicsData.zeros({d}, {a})"
        )
