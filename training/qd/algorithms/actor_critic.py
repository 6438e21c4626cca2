"""The actor-critic algorithms: PGA-ME and DCRL-ME, and the TD3 settings they share."""

from __future__ import annotations

import math
from typing import Any

from training.qd.algorithms.base import Algorithm, register
from training.qd.emitter import Emitter
from training.qd.emitters.dcrl import DCRLEmitter
from training.qd.emitters.iso_line import IsoLineEmitter
from training.qd.emitters.policy_gradient import PolicyGradientEmitter, resolve_preset
from training.qd.multi_emitter import MultiEmitter, split_batch
from training.td3 import TD3Config
from zoo.errors import ConfigError
from zoo.tasks.base import Task

# The TD3 learner's settings shared by the actor-critic algorithms (the PGA-ME papers' and
# QDax's): twin critic (256, 256), Adam 3e-4 for critic and greedy actor, discount 0.99, soft
# target updates 0.005, target smoothing noise 0.2 clipped at 0.5, policy delay 2, replay
# buffer of 1M transitions.
TD3_DEFAULTS: dict[str, Any] = {
    "critic_hidden_sizes": [256, 256],
    "critic_learning_rate": 3e-4,
    "actor_learning_rate": 3e-4,
    "discount": 0.99,
    "tau": 0.005,
    "policy_noise": 0.2,
    "noise_clip": 0.5,
    "policy_delay": 2,
    "buffer_size": 1_000_000,
}


def td3_config(hp: dict[str, Any]) -> TD3Config:
    """The TD3 learner's settings from an algorithm's hyperparameters (``TD3_DEFAULTS`` and
    ``transition_batch``)."""
    return TD3Config(
        critic_hidden_sizes=tuple(hp["critic_hidden_sizes"]),
        critic_learning_rate=hp["critic_learning_rate"],
        actor_learning_rate=hp["actor_learning_rate"],
        discount=hp["discount"],
        tau=hp["tau"],
        policy_noise=hp["policy_noise"],
        noise_clip=hp["noise_clip"],
        policy_delay=int(hp["policy_delay"]),
        batch_size=int(hp["transition_batch"]),
    )


def policy_gradient_emitter(size: int, hp: dict[str, Any]) -> PolicyGradientEmitter:
    """PGA-ME's TD3 policy-gradient emitter of ``size`` offspring (plus the greedy actor)
    from an algorithm's resolved hyperparameters (``TD3_DEFAULTS`` and the preset's
    budgets)."""
    return PolicyGradientEmitter(
        size=size,
        td3_config=td3_config(hp),
        critic_steps=int(hp["critic_steps"]),
        pg_steps=int(hp["pg_steps"]),
        policy_learning_rate=float(hp["policy_learning_rate"]),
        buffer_size=int(hp["buffer_size"]),
    )


def _build_pga_me(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    if task.spec.genome != "policy":
        raise ConfigError(
            f"pga-me trains MLP policies; task {task.spec.name!r} has {task.spec.genome} "
            "genomes. Pick a policy task (e.g. point-maze, walker2d-uni)"
        )
    hp = resolve_preset(hp)
    ga, pg = split_batch(batch_size, (0.5, 0.5))
    return MultiEmitter(
        [
            IsoLineEmitter(size=ga, iso_sigma=hp["iso_sigma"], line_sigma=hp["line_sigma"]),
            policy_gradient_emitter(pg, hp),
        ],
        names=("ga", "pg"),
    )


PGA_ME_CITATION = """@inproceedings{nilsson2021policy,
  title={Policy gradient assisted MAP-Elites},
  author={Nilsson, Olle and Cully, Antoine},
  booktitle={Proceedings of the Genetic and Evolutionary Computation Conference},
  pages={866--875},
  year={2021}
}"""


def resolve_dcrl(task: Task, hp: dict[str, Any]) -> dict[str, Any]:
    """The preset's training budget, and ``reward_offset`` left as None: the task's per-step
    reward lower bound (its QD offset, which is the episode's, over the episode length)."""
    hp = resolve_preset(hp)
    if hp["reward_offset"] is None:
        hp["reward_offset"] = -task.spec.qd_offset / task.spec.episode_length
    return hp


def _build_dcrl_me(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    if task.spec.genome != "policy":
        raise ConfigError(
            f"dcrl-me trains MLP policies; task {task.spec.name!r} has {task.spec.genome} "
            "genomes. Pick a policy task (e.g. point-maze, walker2d-uni)"
        )
    hp = resolve_dcrl(task, hp)
    offset = hp["reward_offset"]
    try:
        offset = float(offset)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"dcrl-me reward_offset must be a number (added to every per-step reward before "
            f"clipping at 0) or null for the task's own, given {hp['reward_offset']!r}"
        ) from err
    if not math.isfinite(offset):
        raise ConfigError(f"dcrl-me reward_offset must be finite, given {offset!r}")
    ga, pg, ai = split_batch(batch_size, (0.5, 0.25, 0.25))
    learner = td3_config(hp)
    return MultiEmitter(
        [
            IsoLineEmitter(size=ga, iso_sigma=hp["iso_sigma"], line_sigma=hp["line_sigma"]),
            DCRLEmitter(
                pg_size=pg,
                ai_size=ai,
                td3_config=learner,
                descriptor_low=tuple(float(x) for x in task.spec.descriptor_low),
                descriptor_high=tuple(float(x) for x in task.spec.descriptor_high),
                reward_offset=offset,
                lengthscale=float(hp["lengthscale"]),
                critic_steps=int(hp["critic_steps"]),
                pg_steps=int(hp["pg_steps"]),
                policy_learning_rate=float(hp["policy_learning_rate"]),
                buffer_size=int(hp["buffer_size"]),
                batch_offset=ga,
            ),
        ],
        names=("ga", "dcrl"),
    )


DCRL_ME_CITATION = """@article{faldor2024synergizing,
  title={Synergizing Quality-Diversity with Descriptor-Conditioned Reinforcement Learning},
  author={Faldor, Maxence and Chalumeau, F{\\'e}lix and Flageat, Manon and Cully, Antoine},
  journal={ACM Transactions on Evolutionary Learning and Optimization},
  year={2024},
  note={arXiv:2401.08632}
}"""


register(
    Algorithm(
        name="pga-me",
        summary="PGA-ME: half Iso+LineDD, half TD3 policy-gradient offspring plus the greedy actor",
        citation=PGA_ME_CITATION,
        # None: taken from the preset ("qdax": 300 critic steps, 100 PG steps, minibatch 256,
        # policy lr 1e-3; "paper": 3000, 150, 100, 5e-3; "cpu": 50, 10, 128, 1e-3); a value
        # given wins over the preset.
        defaults={
            "preset": "qdax",
            "iso_sigma": 0.005,
            "line_sigma": 0.05,
            **TD3_DEFAULTS,
            "critic_steps": None,
            "pg_steps": None,
            "transition_batch": None,
            "policy_learning_rate": None,
        },
        build=_build_pga_me,
        resolve=lambda task, hp: resolve_preset(hp),
    )
)


register(
    Algorithm(
        name="dcrl-me",
        summary=(
            "DCRL-ME: half Iso+LineDD, a quarter descriptor-conditioned policy-gradient "
            "offspring, a quarter descriptor-conditioned actors injected as genomes"
        ),
        citation=DCRL_ME_CITATION,
        # None: taken from the preset ("paper", the default: 3000 critic steps, 150 PG steps,
        # minibatch 100, policy lr 5e-3 as in the DCRL-ME paper and notebook; "qdax": PGA-ME's
        # cheaper QDax budget 300, 100, 256, 1e-3; "cpu": 50, 10, 128, 1e-3); a value given
        # wins over the preset.
        # reward_offset None: the task's per-step reward lower bound (-qd_offset / episode
        # length), added before clipping rewards at 0.
        defaults={
            "preset": "paper",
            "iso_sigma": 0.005,
            "line_sigma": 0.05,
            "lengthscale": 0.1,
            "reward_offset": None,
            **TD3_DEFAULTS,
            "critic_steps": None,
            "pg_steps": None,
            "transition_batch": None,
            "policy_learning_rate": None,
        },
        build=_build_dcrl_me,
        resolve=resolve_dcrl,
    )
)
