"""The model-based algorithms: DA-QD-ext (imagination only) and GDA-QD (imagination plus TD3
policy gradients)."""

from __future__ import annotations

from typing import Any

from training import dynamics
from training.qd.algorithms.actor_critic import TD3_DEFAULTS, policy_gradient_emitter
from training.qd.algorithms.base import Algorithm, register
from training.qd.emitter import Emitter
from training.qd.emitters.imagination import ImaginationEmitter
from training.qd.emitters.policy_gradient import resolve_preset
from training.qd.multi_emitter import MultiEmitter, split_batch
from zoo.errors import ConfigError
from zoo.tasks.base import Task
from zoo.tasks.protocol import EpisodicTask

# The papers' imagination settings: an ensemble of 4 MLPs (512, 512) refit every 25
# iterations on the real transitions of the imagination-selected policies; MAP-Elites in the
# model with Iso+LineDD 0.01 / 0.1 until `batch` imagined additions or 100 imagined
# iterations. `imagined_batch_size` None: the emitter's own batch size.
IMAGINATION_DEFAULTS: dict[str, Any] = {
    "iso_sigma": 0.01,
    "line_sigma": 0.1,
    "imagined_batch_size": None,
    "max_imagined_iterations": 100,
    "retrain_every": 25,
    "model_buffer_size": 1_000_000,
    "sample_dynamics": True,
    "model_members": 4,
    "model_hidden_sizes": [512, 512],
    "model_probabilistic": True,
    "model_learning_rate": 1e-3,
    "model_batch_size": 256,
    "model_steps": 1000,
    "model_holdout": 0.1,
    "model_eval_every": 50,
    "model_patience": 5,
}


def dynamics_config(hp: dict[str, Any]) -> dynamics.DynamicsConfig:
    """The dynamics ensemble's settings from an algorithm's ``model_*`` hyperparameters."""
    return dynamics.DynamicsConfig(
        members=int(hp["model_members"]),
        hidden_sizes=tuple(int(h) for h in hp["model_hidden_sizes"]),
        probabilistic=bool(hp["model_probabilistic"]),
        learning_rate=float(hp["model_learning_rate"]),
        batch_size=int(hp["model_batch_size"]),
        steps=int(hp["model_steps"]),
        holdout=float(hp["model_holdout"]),
        eval_every=int(hp["model_eval_every"]),
        patience=int(hp["model_patience"]),
    )


def imagination_emitter(task: Task, size: int, hp: dict[str, Any], name: str) -> Emitter:
    """The :class:`ImaginationEmitter` of ``size`` genomes per ask for ``hp``.

    Raises:
        ConfigError: the task is not an episodic policy task with model-state methods.
    """
    if not isinstance(task, EpisodicTask) or not hasattr(task, "model_state"):
        raise ConfigError(
            f"{name} imagines episodes in a learned dynamics model; task {task.spec.name!r} "
            "has no model-state methods (model_state, model_observation, model_reward, "
            "model_done, model_descriptor). Pick a task that has them (e.g. point-maze)"
        )
    imagined = hp["imagined_batch_size"]
    return ImaginationEmitter(
        size=size,
        task=task,
        dynamics_config=dynamics_config(hp),
        imagined_batch_size=size if imagined is None else int(imagined),
        max_imagined_iterations=int(hp["max_imagined_iterations"]),
        retrain_every=int(hp["retrain_every"]),
        buffer_size=int(hp["model_buffer_size"]),
        iso_sigma=float(hp["iso_sigma"]),
        line_sigma=float(hp["line_sigma"]),
        sample=bool(hp["sample_dynamics"]),
    )


def _build_da_qd_ext(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    return imagination_emitter(task, batch_size, hp, "da-qd-ext")


def _build_gda_qd(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    p_model = float(hp["p_model"])
    if not 0.0 < p_model < 1.0:
        raise ConfigError(
            f"gda-qd p_model is the share of the batch proposed by imagination, strictly "
            f"between 0 and 1 (0.9 in the paper), given {hp['p_model']!r}; use da-qd-ext for "
            "imagination only"
        )
    hp = resolve_preset(hp)
    model_share, pg_share = split_batch(batch_size, (p_model, 1.0 - p_model))
    return MultiEmitter(
        [
            imagination_emitter(task, model_share, hp, "gda-qd"),
            # The critic learns from every offspring (tells_on_whole_batch); the dynamics
            # model only from the imagination emitter's own slice.
            policy_gradient_emitter(pg_share, hp),
        ],
        names=("model", "pg"),
    )


DA_QD_CITATION = """@inproceedings{lim2022dynamics,
  title={Dynamics-Aware Quality-Diversity for Efficient Learning of Skill Repertoires},
  author={Lim, Bryan and Grillotti, Luca and Bernasconi, Lorenzo and Cully, Antoine},
  booktitle={2022 International Conference on Robotics and Automation (ICRA)},
  year={2022},
  organization={IEEE}
}
@article{lim2023accelerated,
  title={Accelerated Quality-Diversity through Massive Parallelism},
  author={Lim, Bryan and Allard, Maxime and Grillotti, Luca and Cully, Antoine},
  journal={Transactions on Machine Learning Research},
  year={2023}
}"""

GDA_QD_CITATION = """@inproceedings{lim2023efficient,
  title={Efficient Exploration using Model-Based Quality-Diversity with Gradients},
  author={Lim, Bryan and Flageat, Manon and Cully, Antoine},
  booktitle={The 2023 Conference on Artificial Life (ALIFE)},
  year={2023},
  note={arXiv:2211.12610}
}"""


register(
    Algorithm(
        name="da-qd-ext",
        summary=(
            "DA-QD-ext: MAP-Elites in a learned dynamics ensemble; only the solutions that "
            "improved the imagined archive are evaluated for real"
        ),
        citation=DA_QD_CITATION,
        defaults=dict(IMAGINATION_DEFAULTS),
        build=_build_da_qd_ext,
    )
)


register(
    Algorithm(
        name="gda-qd",
        summary=(
            "GDA-QD: 90% of the batch from MAP-Elites in a learned dynamics ensemble, 10% TD3 "
            "policy-gradient offspring plus the greedy actor"
        ),
        citation=GDA_QD_CITATION + "\n" + DA_QD_CITATION,
        # The TD3 budget is PGA-ME's (preset "qdax" unless given); the dynamics model trains
        # only on the imagination-selected policies' transitions, the critic on all of them.
        defaults={
            "p_model": 0.9,
            **IMAGINATION_DEFAULTS,
            "preset": "qdax",
            **TD3_DEFAULTS,
            "critic_steps": None,
            "pg_steps": None,
            "transition_batch": None,
            "policy_learning_rate": None,
        },
        build=_build_gda_qd,
        resolve=lambda task, hp: resolve_preset(hp),
    )
)
