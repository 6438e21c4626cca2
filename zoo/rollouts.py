"""Sampling policies from a generator, rolling them out, and rendering a rollout.

::

    import zoo
    from zoo.rollouts import render_html, sample_rollouts

    generator = zoo.load_generator("walker2d-uni-ldm")
    out = sample_rollouts(generator, [[0.2, 0.8], [0.8, 0.2]], num_samples=2, seed=0)
    print(out.achieved - out.requested, out.returns)
    first = jax.tree_util.tree_map(lambda x: x[0], out.policies)
    render_html(out.task, first, out.reset_key, "rollout.html")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from zoo.errors import ConfigError
from zoo.serialization import write_text
from zoo.tasks.base import Task

__all__ = ["HTML_NEEDS_INTERNET", "SampledRollouts", "can_render", "render_html", "sample_rollouts"]

HTML_NEEDS_INTERNET = (
    "the HTML viewer loads three.js, lil-gui and the Brax viewer script from CDNs (unpkg.com, "
    "cdn.jsdelivr.net): it shows a blank page without internet access. For an offline video "
    "use zoo.video.write_rollout_video (.gif, .mp4 or .png)"
)
"""What to tell a user who gets an HTML file from :func:`render_html`."""


@dataclasses.dataclass(frozen=True)
class SampledRollouts:
    """Policies sampled for requested measures (or text prompts), each rolled out once.

    Attributes:
        task: the generator's task (what the policies were rolled out on).
        policies: the population of ``C * n`` policies, all samples of condition 0 first.
        requested: ``[C * n, k]`` the measure each policy was sampled for (clipped to the
            descriptor bounds when sampling clipped them; NaN when sampled for text alone).
        achieved: ``[C * n, k]`` the descriptors of its rollout.
        returns: ``[C * n]`` the return of its rollout.
        reset_key: the reset key of the first policy's episode (to replay or render it).
        prompts: the prompt each policy was sampled for (``None`` without text).
    """

    task: Task
    policies: Any
    requested: Float[np.ndarray, "batch k"]
    achieved: Float[np.ndarray, "batch k"]
    returns: Float[np.ndarray, " batch"]
    reset_key: PRNGKeyArray
    prompts: tuple[str, ...] | None = None

    @property
    def errors(self) -> Float[np.ndarray, " batch"]:
        """``[C * n]`` Euclidean distance between requested and achieved measures."""
        return np.sqrt(((self.requested - self.achieved) ** 2).sum(axis=1))


def sample_rollouts(
    generator: Any,
    measures: Float[ArrayLike, "conditions k"] | None,
    num_samples: int,
    seed: int,
    *,
    text: Sequence[str] | None = None,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 1.0,
    clip: bool = False,
) -> SampledRollouts:
    """Sample ``num_samples`` policies per condition and roll each out once on its task.

    Args:
        generator: a :class:`zoo.generator.Generator` (or anything with its ``make_task``,
            ``sample``, ``descriptor_low`` and ``descriptor_high``).
        measures: ``[C, k]`` requested measures (``None``: text alone).
        num_samples: policies per condition.
        text: ``C`` prompts, for a generator that takes text.
        seed: one seed for sampling and for the (stochastic) resets.
        sampler, steps, guidance, clip: as for :meth:`zoo.generator.Generator.sample`.

    Raises:
        ConfigError: ``num_samples`` below 1, or what ``generator.sample`` refuses.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(
            f"num_samples must be an integer >= 1 (policies per condition), given {num_samples!r}"
        )
    task = generator.make_task()
    sample_key, eval_key = jax.random.split(jax.random.key(seed))
    extra = {} if text is None else {"text": list(text)}
    policies = generator.sample(
        sample_key,
        measures,
        num_samples=num_samples,
        **extra,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        clip=clip,
    )
    result = jax.jit(task.evaluate)(policies, eval_key)
    count = len(jax.tree_util.tree_leaves(policies)[0]) // num_samples
    if measures is None:
        requested = np.full(
            (count * num_samples, len(generator.descriptor_low)), np.nan, np.float32
        )
    else:
        requested = np.asarray(measures, np.float32).reshape(-1, len(generator.descriptor_low))
        requested = np.repeat(
            np.broadcast_to(requested, (count, requested.shape[1])), num_samples, 0
        )
    prompts = None
    if text is not None:
        texts = [text] if isinstance(text, str) else list(text)
        prompts = tuple(np.repeat(np.broadcast_to(np.array(texts), (count,)), num_samples).tolist())
    if clip:
        requested = np.clip(requested, generator.descriptor_low, generator.descriptor_high)
    return SampledRollouts(
        task=task,
        policies=policies,
        requested=requested,
        achieved=np.asarray(result.descriptors),
        returns=np.asarray(result.fitness),
        # Task.evaluate resets episode i from split(key, batch)[i] (stochastic resets).
        reset_key=jax.random.split(eval_key, requested.shape[0])[0],
        prompts=prompts,
    )


def can_render(task: Task) -> bool:
    """Whether ``task`` has a 3-D scene :func:`render_html` can show (a Brax task)."""
    return hasattr(task, "rollout_states")


def render_html(task: Task, policy: Any, key: PRNGKeyArray, path: str | Path) -> Path:
    """Write brax's HTML viewer of one rollout of ``policy`` (no batch axis) to ``path``.

    The page needs internet access to show anything (see :data:`HTML_NEEDS_INTERNET`): Brax
    ships its viewer script but not three.js, which the page loads from a CDN. Offline,
    write a video with :func:`zoo.video.write_rollout_video` instead.

    Args:
        task: a Brax task (one with ``rollout_states``).
        policy: one policy of the task's spec.
        key: the reset key of the episode (ignored by deterministic resets).
        path: the HTML file to write (its folder is created).

    Returns:
        ``path``: an HTML page that renders only with internet access.

    Raises:
        ConfigError: a task without a 3-D scene.
    """
    if not can_render(task):
        raise ConfigError(
            f"rendering needs a Brax task with a 3-D scene; the task {task.spec.name!r} has "
            "none. Render a policy of a Brax task (e.g. walker2d-uni) instead"
        )
    from brax.io import html

    states = task.rollout_states(policy, key)
    path = Path(path)
    write_text(path, html.render(task.env.sys, states))  # atomic; creates the folder
    return path
