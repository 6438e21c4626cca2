"""What a text-conditioned generator produces for a few prompts, measured by the labeller.

:func:`evaluate_prompts` samples ``samples`` policies per prompt (text alone, the
evaluation's sampler and guidance), rolls them out with the source archive's protocol (its
task, constructor arguments and reset; as many episodes per policy as its labels were read
from, features averaged) and labels every policy with :mod:`zoo.labels`,
against the *archive's* speed reference (the ``slow`` / ``fast`` thresholds of
``|velocity|`` stored in its ``labels.json``), so "quickly" means what it meant in training.
Per prompt it reports the most common produced labels (with counts), the fraction of samples
whose gait, direction and foot usage match the prompt's (each, and all three at once;
:func:`zoo.labels.text_parts` reads the prompt's parts, so a paraphrase counts like its
label), the fraction that fell and the mean return.

So that the numbers mean something, the same fractions are measured on as many samples of
the generator with **no condition** (the learned null condition alone: classifier-free
guidance with scale 0, which is exactly the unconditional prediction), and counted over the
archive's own labelled elites: text that steers moves the match fractions above the
unconditional ones, which stay near the archive's.

The result is a JSON-able dict (stored as ``config["text_examples"]`` of a bundled generator
and shown as a table on its card, :mod:`hub_cards`); :func:`format_prompt_examples` prints it.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from zoo.archive_artifact import LABELS_NAME, ArchiveArtifact
from zoo.errors import ConfigError
from zoo.evaluation import evaluate_rollouts, task_of
from zoo.labels import (
    SpeedReference,
    behaviour_features,
    label_behaviours,
    text_parts,
)

__all__ = ["MATCHED_PARTS", "evaluate_prompts", "format_prompt_examples", "match_fractions"]

MATCHED_PARTS = ("gait", "direction", "foot")
"""The parts of a label compared with the prompt's (and all three at once, ``"all"``)."""


def _labels_file(archive: ArchiveArtifact, labels: Any) -> dict[str, Any]:
    if isinstance(labels, Mapping):
        return dict(labels)
    if labels is None:
        if archive.path is None:
            raise ConfigError(
                "the archive was not loaded from a directory, so its labels.json cannot be "
                "found; pass labels=PATH (written by `qdzoo label ARCHIVE`)"
            )
        labels = Path(archive.path) / LABELS_NAME
    path = Path(labels)
    if not path.is_file():
        raise ConfigError(
            f"the prompts are labelled against the archive's speed reference, stored in its "
            f"labels file, but {path} does not exist; write it with `qdzoo label ARCHIVE`"
        )
    return json.loads(path.read_text())


def _speed_reference(data: Mapping[str, Any]) -> SpeedReference:
    records = data.get("labels") or []
    stored = records[0].get("speed_reference") if records else None
    if not isinstance(stored, Mapping) or not {"slow", "fast"} <= set(stored):
        raise ConfigError(
            "the labels file records no speed_reference (slow / fast thresholds of "
            "|velocity|); write it again with `qdzoo label ARCHIVE`"
        )
    return SpeedReference(float(stored["slow"]), float(stored["fast"]))


def match_fractions(
    wanted: Mapping[str, Any], produced: Sequence[Mapping[str, Any]]
) -> dict[str, float | None]:
    """Fractions of ``produced`` label parts whose gait, direction and foot usage equal
    ``wanted``'s (``"all"``: the three at once). A part the prompt does not name (``None``;
    the foot usage excepted, where ``None`` means "no particular foot") gives ``None``."""
    out: dict[str, float | None] = {}
    every = np.ones(len(produced), bool)
    for part in MATCHED_PARTS:
        if wanted.get(part) is None and part != "foot":
            out[part] = None
            continue
        same = np.asarray([p.get(part) == wanted.get(part) for p in produced], bool)
        every &= same
        out[part] = round(float(same.mean()), 4) if len(produced) else None
    out["all"] = round(float(every.mean()), 4) if len(produced) else None
    return out


def _top(texts: Sequence[str], top: int) -> list[list[Any]]:
    return [[t, int(c)] for t, c in collections.Counter(texts).most_common(top)]


def evaluate_prompts(
    generator: Any,
    archive: ArchiveArtifact,
    prompts: Sequence[str],
    key: PRNGKeyArray,
    *,
    samples: int = 16,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 1.0,
    labels: str | Path | Mapping[str, Any] | None = None,
    top: int = 3,
) -> dict[str, Any]:
    """Sample, roll out and label ``samples`` policies per prompt (see the module docstring).

    Args:
        generator: a text-conditioned :class:`zoo.generator.Generator` (``"text"`` in its
            ``conditions``).
        archive: its source archive (task, reset protocol, labelled elites).
        prompts: the prompts (each sampled alone: text only, no measures).
        key: randomness of the samples (and of a stochastic reset).
        samples: policies per prompt; the unconditional baseline draws as many per prompt.
        sampler, steps, guidance: of ``generator.sample`` (the generator evaluation's).
        labels: the archive's labels file (a path, or its parsed JSON); default
            ``labels.json`` beside the archive.
        top: most common produced labels reported per prompt.

    Returns:
        ``{"settings", "prompts": [{"prompt", "parts", "seen", "samples", "produced",
        "match", "unconditional_match", "archive_match", "fell", "mean_return"}],
        "unconditional": {"produced", "fell", "mean_return"}, "wall_time_s"}``; ``seen``
        says whether the prompt is one of the training texts (a label or paraphrase of
        the labels file) verbatim.

    Raises:
        ConfigError: no prompt, ``samples < 1``, a generator without text, or no labels file
            with a speed reference.
        TaskMismatchError: a task the labeller does not know.
    """
    started = time.perf_counter()
    prompts = [str(p) for p in prompts]
    if not prompts or not all(p.strip() for p in prompts):
        raise ConfigError(f"prompts must be a non-empty list of non-empty strings, got {prompts}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be an integer >= 1 (policies per prompt), got {samples!r}")
    if "text" not in getattr(generator, "conditions", ()):
        raise ConfigError(
            "evaluate_prompts needs a text-conditioned generator (distilled with `qdzoo "
            "distill ARCHIVE --condition text` or both); this one takes "
            f"{list(getattr(generator, 'conditions', []))}"
        )
    data = _labels_file(archive, labels)
    reference = _speed_reference(data)
    records = data.get("labels") or []
    seen = {t for r in records for t in [r["label"], *r.get("paraphrases", [])]}
    archive_parts = [r["parts"] for r in records if isinstance(r.get("parts"), Mapping)]
    task = task_of(archive)
    generator.check_task(task)
    sample_key, eval_key = jax.random.split(key)
    options = {"num_samples": samples, "sampler": sampler, "steps": steps}
    runs = {
        "text": generator.sample(sample_key, text=prompts, guidance=guidance, **options),
        # guidance 0: eps_null + 0 * (eps_text - eps_null), the null condition's prediction
        "unconditional": generator.sample(sample_key, text=prompts, guidance=0.0, **options),
    }
    # as many episodes per policy as the archive's labels were read from (features and
    # returns averaged), so that a produced label means what a training label meant
    episodes = int(data.get("episodes") or 1)
    produced: dict[str, tuple[list[Any], np.ndarray, np.ndarray]] = {}
    for name, policies in runs.items():
        features = behaviour_features(task, policies, eval_key, episodes=episodes)
        made = label_behaviours(features, reference)
        fitness, _ = evaluate_rollouts(task, policies, eval_key, episodes)
        produced[name] = (made, np.asarray(fitness).reshape(-1), np.asarray(features.fell))
    unconditional, u_fitness, u_fell = produced["unconditional"]
    made, fitness, fell = produced["text"]
    rows = []
    for i, prompt in enumerate(prompts):
        part = slice(i * samples, (i + 1) * samples)
        wanted = text_parts(prompt)
        rows.append(
            {
                "prompt": prompt,
                "parts": wanted,
                "seen": prompt in seen,
                "samples": samples,
                "produced": _top([lab.text for lab in made[part]], top),
                "match": match_fractions(wanted, [lab.parts for lab in made[part]]),
                "unconditional_match": match_fractions(
                    wanted, [lab.parts for lab in unconditional]
                ),
                "archive_match": match_fractions(wanted, archive_parts),
                "fell": round(float(fell[part].mean()), 4),
                "mean_return": round(float(fitness[part].mean()), 4),
            }
        )
    return {
        "settings": {
            "samples": samples,
            "sampler": sampler,
            "steps": steps,
            "guidance": float(guidance),
            "unconditional": "guidance 0 (the null condition alone), as many samples",
            "speed_reference": {"slow": reference.slow, "fast": reference.fast},
            "reset": task.spec.reset,
            "episode_length": task.spec.episode_length,
            "episodes": episodes,
            "archive_elites": len(archive_parts),
        },
        "prompts": rows,
        "unconditional": {
            "samples": len(unconditional),
            "produced": _top([lab.text for lab in unconditional], top),
            "fell": round(float(u_fell.mean()), 4),
            "mean_return": round(float(u_fitness.mean()), 4),
        },
        "wall_time_s": round(time.perf_counter() - started, 2),
    }


def format_prompt_examples(examples: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_prompts`: per prompt the match fractions with
    text, and in brackets without a condition."""

    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"{'prompt':<52} {'gait':>11} {'direction':>11} {'foot':>11} {'all':>11} {'return':>8}"
    ]
    for row in examples["prompts"]:
        text, base = row["match"], row["unconditional_match"]
        cells = [f"{show(text[p])} ({show(base[p])})" for p in (*MATCHED_PARTS, "all")]
        prompt = row["prompt"] + ("" if row["seen"] else " *")
        lines.append(
            f"{prompt[:52]:<52} " + " ".join(f"{c:>11}" for c in cells)
            + f" {row['mean_return']:>8.1f}"
        )  # fmt: skip
        lines.append("    produced: " + "; ".join(f"{t} x{c}" for t, c in row["produced"]))
    unconditional = examples["unconditional"]
    lines.append(
        f"(in brackets: {unconditional['samples']} samples without a condition; mean return "
        f"{unconditional['mean_return']:.1f}; * not a training text)"
    )
    return "\n".join(lines)
