"""The Generator artifact and distillation: training, sampling, bad input, save/load/Hub, CLI.

One tiny point-maze archive (random 2 -> 8 -> 8 -> 2 policies with synthetic descriptors) is
distilled once per module with tiny models; every other run (resume, CLI, warm start) uses
the same architecture and chunk length, so the compiled training chunks are shared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hub_server import HubServer, hub_server_fixture  # noqa: F401  (the hub_server fixture)
from safetensors.numpy import load_file

import zoo
from models.policy import MLPPolicy, PolicySpec
from training.cli import main
from training.distill import DistillConfig, distill
from training.rundir import CHECKPOINT_DIR, METRICS_LOG, RunDir
from zoo import tasks
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_spec
from zoo.errors import (
    ArtifactError,
    ChecksumError,
    ConfigError,
    FormatVersionError,
    NonFiniteError,
    OutputExistsError,
    ShapeError,
    TaskMismatchError,
    UnknownNameError,
)
from zoo.generator import Generator, clipped_eps_fn, load_generator

TASK_KWARGS = {"episode_length": 10, "policy_hidden_sizes": [8, 8]}
TINY_VAE = {
    "latent_size": 8,
    "cnn_channels": [2, 2],
    "cnn_grid": 2,
    "vector_width": 8,
    "projection_width": 16,
    "node_size": 8,
    "message_rounds": 1,
    "num_heads": 2,
    "head_width": 8,
    "basis_size": 8,
    "basis_width": 16,
    "normaliser_width": 8,
}
TINY_SETTINGS: dict[str, Any] = {
    "vae": TINY_VAE,
    "denoiser": {"width": 16, "num_blocks": 1, "num_heads": 2, "time_embedding_size": 16},
    "condition_encoder": {"num_tokens": 2, "token_size": 8, "width": 16},
    "vae_steps": 600,
    "diffusion_steps": 400,
    "vae_lr": 3e-3,
    "diffusion_lr": 3e-3,
    "behaviour_weight": 1.0,
    "behaviour_states": 8,
    "num_timesteps": 50,
    "chunk": 50,
    "eval_every": 100,
    "seed": 3,
}
TINY = DistillConfig(**TINY_SETTINGS)
REPO = "qdzoo-tests/tiny-generator"
MEASURES = [[-0.5, 0.5], [0.5, -0.5], [0.0, 0.9]]


def random_policies(spec: PolicySpec, size: int, seed: int) -> MLPPolicy:
    """``size`` LeCun-normal policies of ``spec``, drawn with NumPy (nothing to compile)."""
    rng = np.random.default_rng(seed)
    sizes = spec.layer_sizes
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    weights = tuple(rng.normal(size=(size, o, i)) / np.sqrt(i) for i, o in pairs)
    biases = tuple(0.1 * rng.normal(size=(size, o)) for _, o in pairs)
    return MLPPolicy(
        weights=tuple(jnp.asarray(w, jnp.float32) for w in weights),
        biases=tuple(jnp.asarray(b, jnp.float32) for b in biases),
        obs_mean=None,
        obs_std=None,
        activation=spec.activation,
        output_activation=spec.output_activation,
    )


def make_archive(hidden: tuple[int, ...] = (8, 8), size: int = 48) -> ArchiveArtifact:
    """Random point-maze policies with synthetic descriptors in a 5 x 5 grid."""
    task = tasks.make("point-maze", **{**TASK_KWARGS, "policy_hidden_sizes": list(hidden)})
    spec = task.default_policy()
    policies = random_policies(spec, size, seed=0)
    descriptors = np.random.default_rng(1).uniform(-1.0, 1.0, (size, 2)).astype(np.float32)
    return artifact_of(task, policies, descriptors, (5, 5))


def artifact_of(
    task: Any, policies: MLPPolicy, descriptors: np.ndarray, grid: tuple[int, int]
) -> ArchiveArtifact:
    """A point-maze archive artifact of ``policies`` at ``descriptors`` (fitness: minus the
    squared norm of the descriptors) in a ``grid``."""
    spec = task.default_policy()
    template = jax.tree_util.tree_map(lambda x: x[0], policies)
    archive = Archive.grid(
        template, grid, task.spec.descriptor_low, task.spec.descriptor_high,
        qd_offset=task.spec.qd_offset,
    )  # fmt: skip
    fitness = -np.sum(descriptors**2, axis=1)
    archive, _ = archive.insert(policies, jnp.asarray(fitness), jnp.asarray(descriptors))
    config = {
        "task": {"name": "point-maze", "kwargs": task.spec.kwargs, "spec": task.spec.to_dict()},
        "policy": spec.to_dict(),
        "archive": archive_spec(archive, task.spec.descriptor_names),
        "evaluation": {"reset": "deterministic", "episode_length": 10, "seed": 0},
    }
    return ArchiveArtifact(archive, config)


def leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]


def assert_same_weights(a: Generator, b: Generator) -> None:
    for x, y in zip(
        leaves((a.vae, a.denoiser, a.measure_encoder)),
        leaves((b.vae, b.denoiser, b.measure_encoder)),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    assert a.latent_scale == b.latent_scale


def assert_same_policies(a: Any, b: Any) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / METRICS_LOG).read_text().splitlines()]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveArtifact]:
    artifact = make_archive()
    directory = tmp_path_factory.mktemp("archive") / "tiny-archive"
    artifact.save_pretrained(directory, plot=False)
    return directory, artifact


@pytest.fixture(scope="module")
def distilled(
    tmp_path_factory: pytest.TempPathFactory, archive: tuple[Path, ArchiveArtifact]
) -> tuple[Path, Generator]:
    out = tmp_path_factory.mktemp("distilled") / "run"
    return out, distill(archive[1], TINY, out, progress=False, source="tiny-archive")


# ------------------------------------------------------------------------------ training


def test_distillation_losses_fall_and_the_run_directory_is_complete(
    distilled: tuple[Path, Generator], archive: tuple[Path, ArchiveArtifact]
) -> None:
    out, generator = distilled
    log = read_log(out)
    vae = [row for row in log if row["phase"] == "vae"]
    diffusion = [row for row in log if row["phase"] == "diffusion"]
    assert [row["step"] for row in vae] == list(range(50, 601, 50))
    assert [row["step"] for row in diffusion] == list(range(50, 401, 50))
    assert vae[-1]["loss"] < 0.8 * vae[0]["loss"], (vae[0], vae[-1])
    assert vae[-1]["behaviour"] < 0.5 * vae[0]["behaviour"]
    evaluated = [row for row in vae if "eval_relative_error" in row]
    assert [row["step"] for row in evaluated] == [100, 200, 300, 400, 500, 600]
    assert evaluated[-1]["eval_relative_error"] < evaluated[0]["eval_relative_error"]
    assert diffusion[-1]["loss"] < 0.6 * diffusion[0]["loss"], (diffusion[0], diffusion[-1])
    assert diffusion[-1]["eval_loss"] < diffusion[1]["eval_loss"]

    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "config.json", "README.md", "metrics.jsonl", "vae/config.json", "vae/model.safetensors",
        "denoiser/config.json", "denoiser/model.safetensors", "condition_encoder/config.json",
        "condition_encoder/model.safetensors", "checkpoint/run.json",
        "checkpoint/vae.safetensors", "checkpoint/diffusion.safetensors",
    } <= names  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["artifact"] == "generator" and config["format_version"] == 2
    assert config["task"] == archive[1].config["task"]
    assert config["descriptors"] == {
        "names": ["x_position", "y_position"], "low": [-1.0, -1.0], "high": [1.0, 1.0],
    }  # fmt: skip
    diffusion = dict(config["diffusion"])
    clip_x0 = diffusion.pop("clip_x0")
    assert diffusion == {"schedule": "cosine", "num_timesteps": 50, "prediction": "epsilon"}
    assert config["vae"]["node_size"] == 8 and config["vae"]["archive_normalisation"] is True
    source = config["source_archive"]
    assert source["name"] == "tiny-archive"
    assert source["num_elites"] == archive[1].elite_indices().size
    assert config["training"]["config"] == TINY.to_dict()
    assert config["latent_scale"] == pytest.approx(1.0 / config["training"]["latent_std"])
    # the encoded archive has unit std once scaled; sampling clips x0 a little beyond it
    scaled = generator.encode(archive[1].genomes(archive[1].elite_indices()))
    scaled = scaled * generator.latent_scale
    assert float(jnp.std(scaled)) == pytest.approx(1.0, rel=1e-4)
    assert clip_x0 == pytest.approx(1.25 * float(jnp.max(jnp.abs(scaled))), rel=1e-5)
    assert generator.clip_x0 == clip_x0


def test_resume_reproduces_the_uninterrupted_run(
    distilled: tuple[Path, Generator],
    archive: tuple[Path, ArchiveArtifact],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference_dir, reference = distilled
    out = tmp_path / "run"
    save_checkpoint = RunDir.save
    saves = {"count": 0}

    def interrupt_at(n: int) -> None:
        def save(*args: Any) -> None:
            saves["count"] += 1
            if saves["count"] == n:
                raise KeyboardInterrupt
            save_checkpoint(*args)

        saves["count"] = 0
        monkeypatch.setattr(RunDir, "save", save)

    interrupt_at(5)  # during the VAE phase (12 chunks)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        distill(archive[1], TINY, out, progress=False)
    assert not (out / "config.json").exists()
    interrupt_at(6)  # resumed at step 200: chunk 12 of the VAE + 2 of the diffusion phase
    with pytest.raises(KeyboardInterrupt):
        distill(archive[1], TINY, out, resume=True, progress=False)
    monkeypatch.setattr(RunDir, "save", save_checkpoint)
    resumed = distill(archive[1], TINY, out, resume=True, progress=False, source="tiny-archive")
    assert_same_weights(resumed, reference)
    assert read_log(out) == read_log(reference_dir)
    assert resumed.config["training"]["final"] == reference.config["training"]["final"]


def test_existing_output_and_changed_resume_are_refused(
    distilled: tuple[Path, Generator], archive: tuple[Path, ArchiveArtifact]
) -> None:
    out, _ = distilled
    with pytest.raises(OutputExistsError, match="--resume"):
        distill(archive[1], TINY, out, progress=False)
    other = DistillConfig(**{**TINY_SETTINGS, "seed": 4})
    with pytest.raises(ConfigError, match="seed"):
        distill(archive[1], other, out, resume=True, progress=False)
    with pytest.raises(ConfigError, match="vae"):
        DistillConfig(vae={"nodes": 3})
    with pytest.raises(ConfigError, match="condition_dropout"):
        DistillConfig(condition_dropout=1.0)


def test_warm_start_from_a_generator(
    distilled: tuple[Path, Generator], archive: tuple[Path, ArchiveArtifact], tmp_path: Path
) -> None:
    reference_dir, init = distilled
    short = {**TINY_SETTINGS, "vae_steps": 50, "diffusion_steps": 50, "eval_every": 50}
    # the architecture comes from the initial generator, whatever the config says
    config = DistillConfig(**{**short, "vae": {}, "denoiser": {}, "condition_encoder": {}})
    warm = distill(archive[1], config, tmp_path / "warm", init=init, progress=False)
    assert warm.config["vae"] == init.config["vae"]
    assert warm.config["training"]["init"]["path"] == str(reference_dir)
    first = read_log(reference_dir)
    log = read_log(tmp_path / "warm")
    for phase in ("vae", "diffusion"):
        scratch = next(row for row in first if row["phase"] == phase)
        started = next(row for row in log if row["phase"] == phase)
        assert started["loss"] < scratch["loss"], (phase, started, scratch)
    other = make_archive(hidden=(4,), size=8)
    with pytest.raises(TaskMismatchError, match="same policy spec"):
        distill(other, config, tmp_path / "other", init=init, progress=False)


def test_cli_distill_end_to_end(
    distilled: tuple[Path, Generator],
    archive: tuple[Path, ArchiveArtifact],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory, _ = archive
    out = tmp_path / "cli"
    steps = {"vae_steps", "diffusion_steps", "seed", "chunk"}
    settings = [f"{k}={json.dumps(v)}" for k, v in TINY_SETTINGS.items() if k not in steps]
    args = ["distill", str(directory), "--out", str(out), "--vae-steps", "600"]
    args += ["--diffusion-steps", "400", "--seed", "3", "--chunk", "50", "--quiet"]
    for item in settings:
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "saved to" in printed and "600 steps" in printed
    generator = load_generator(out)
    assert_same_weights(generator, distilled[1])  # the archive read back from disk is the same
    assert generator.config["source_archive"]["name"] == str(directory)
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["distill", str(directory), "--out", str(tmp_path / "x"), "--set", "vae_lr=-1"]) == 2
    )
    assert "vae_lr" in capsys.readouterr().err


# ------------------------------------------------------------------------------ sampling


@pytest.fixture(scope="module")
def generator(distilled: tuple[Path, Generator]) -> Generator:
    return distilled[1]


def test_sample_shapes_order_and_every_sampler(generator: Generator) -> None:
    spec = generator.policy_spec
    key = jax.random.key(0)
    six = generator.sample(key, MEASURES, num_samples=2, steps=5)
    assert six.weights[0].shape == (6, 8, 2) and six.weights[-1].shape == (6, 2, 8)
    assert six.activation == spec.activation
    one = generator.sample(key, MEASURES[0], num_samples=6, steps=5)
    assert one.weights[0].shape == (6, 8, 2)
    # row-major: rows 0 and 1 are the samples of measure 0 (same noise rows, same condition)
    for x, y in zip(leaves(six), leaves(one), strict=True):
        np.testing.assert_array_equal(x[:2], y[:2])
        assert not np.array_equal(x[2:], y[2:])
    assert_same_policies(six, generator.sample(key, MEASURES, num_samples=2, steps=5))
    ddpm = generator.sample(key, MEASURES, 2, sampler="ddpm")
    guided_ode = generator.sample(key, MEASURES, 2, sampler="ode", steps=3, guidance=2.0)
    for policies in (ddpm, guided_ode):
        assert policies.weights[0].shape == (6, 8, 2)
        assert all(np.isfinite(x).all() for x in leaves(policies))
        assert not np.array_equal(leaves(policies)[0], leaves(six)[0])
    result = generator.make_task().evaluate(six, jax.random.key(1))
    assert result.fitness.shape == (6,) and result.descriptors.shape == (6, 2)
    latents = generator.sample_latents(key, MEASURES, 2, steps=5)
    assert latents.shape == (6, 8)
    assert_same_policies(generator.decode(latents), six)


def test_clipped_noise_bounds_the_implied_clean_latent(generator: Generator) -> None:
    schedule = generator.schedule
    x = 3.0 * jax.random.normal(jax.random.key(0), (5, 4))
    eps = jax.random.normal(jax.random.key(1), (5, 4))
    t = jnp.asarray([0.0, 10.0, 25.5, 40.0, 49.0])
    unclipped = clipped_eps_fn(lambda x, t, c: eps, schedule, jnp.inf)(x, t, None)
    np.testing.assert_array_equal(unclipped, eps)
    clipped = clipped_eps_fn(lambda x, t, c: eps, schedule, 0.5)(x, t, None)
    abar = schedule.alpha_bar_at(t)[:, None]
    x0 = (x - jnp.sqrt(1 - abar) * clipped) / jnp.sqrt(abar)
    assert float(jnp.abs(x0).max()) <= 0.5 + 1e-3
    inside = jnp.abs((x - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar)) <= 0.5
    np.testing.assert_allclose(clipped[inside], eps[inside], rtol=1e-6)


def test_bad_measures_and_arguments(generator: Generator) -> None:
    key = jax.random.key(0)
    with pytest.raises(ShapeError, match=r"\[n, 2\].*x_position, y_position"):
        generator.sample(key, [0.1, 0.2, 0.3])
    with pytest.raises(ShapeError, match="shape"):
        generator.sample(key, np.zeros((2, 2, 2)))
    with pytest.raises(ConfigError, match="outside the descriptor bounds.*clip=True"):
        generator.sample(key, [[0.0, 0.0], [1.5, 0.0], [0.0, 0.0]], num_samples=2, steps=5)
    clipped = generator.sample(
        key, [[0.0, 0.0], [1.5, 0.0], [0.0, -7.0]], num_samples=2, steps=5, clip=True
    )
    assert_same_policies(
        clipped, generator.sample(key, [[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]], 2, steps=5)
    )
    with pytest.raises(ConfigError, match="finite"):
        generator.sample(key, [np.nan, 0.0])
    with pytest.raises(UnknownNameError, match="ddim, ddpm, ode"):
        generator.sample(key, [0.0, 0.0], sampler="euler")
    with pytest.raises(ConfigError, match="all 50 steps"):
        generator.sample(key, [0.0, 0.0], sampler="ddpm", steps=10)
    with pytest.raises(ConfigError, match="at most"):
        generator.sample(key, [0.0, 0.0], steps=51)
    with pytest.raises(ConfigError, match="num_samples"):
        generator.sample(key, [0.0, 0.0], num_samples=0)
    with pytest.raises(ShapeError, match="latents"):
        generator.decode(jnp.zeros((2, 3)))


def test_check_task_names_both_tasks(generator: Generator) -> None:
    generator.check_task(generator.make_task())
    generator.check_task(tasks.make("point-maze", **{**TASK_KWARGS, "episode_length": 50}))
    with pytest.raises(TaskMismatchError, match="'point-maze'.*'arm'"):
        generator.check_task(tasks.make("arm"))
    with pytest.raises(TaskMismatchError, match="policy_hidden_sizes"):
        generator.check_task(tasks.make("point-maze", policy_hidden_sizes=[4]))
    with pytest.raises(TaskMismatchError, match="reset"):
        generator.check_task(tasks.make("point-maze", **TASK_KWARGS, reset="stochastic"))


def test_non_finite_parameters_are_reported(generator: Generator) -> None:
    vae = eqx.tree_at(
        lambda v: v.decoder.edge_heads.out.weight,
        generator.vae,
        jnp.full_like(generator.vae.decoder.edge_heads.out.weight, jnp.nan),
    )
    broken = Generator(
        vae, generator.denoiser, generator.measure_encoder, generator.schedule,
        generator.latent_scale, generator.config,
    )  # fmt: skip
    with pytest.raises(NonFiniteError, match="6 of 6 generated policies"):
        broken.sample(jax.random.key(0), MEASURES, num_samples=2, steps=5)


# ------------------------------------------------------------------------ save, load, Hub


def copy_with(generator: Generator, **config: Any) -> Generator:
    return Generator(
        generator.vae, generator.denoiser, generator.measure_encoder, generator.schedule,
        generator.latent_scale, {**generator.config, **config},
    )  # fmt: skip


def test_save_load_round_trip_and_card(generator: Generator, tmp_path: Path) -> None:
    path = tmp_path / "gen"
    path.mkdir()
    (path / "returns_cdf.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    evaluated = copy_with(
        generator,
        metrics={"reward_ratio": 0.97, "js_divergence": 0.012, "reconstructed_coverage": 0.9},
        images={"returns CDF": "returns_cdf.png", "heatmap": "heatmap_missing.png"},
    )
    evaluated.save_pretrained(path)
    loaded = Generator.from_pretrained(str(path))
    assert_same_weights(loaded, generator)
    assert loaded.config["metrics"]["reward_ratio"] == 0.97
    key = jax.random.key(5)
    assert_same_policies(
        loaded.sample(key, MEASURES, 2, steps=5), generator.sample(key, MEASURES, 2, steps=5)
    )
    card = (path / "README.md").read_text()
    assert "model-index:" in card and "type: reward_ratio" in card and "value: 0.97" in card
    assert "![returns CDF](returns_cdf.png)" in card and "heatmap_missing" not in card
    assert "zoo.load_generator" in card
    assert "Measured by" not in card  # no evaluation settings recorded
    settings = {"sampler": "ddim", "steps": 100, "guidance": 1.0, "rollouts": 8}
    settings.update(reset="stochastic", test_set_size=17, test_regions=50, ceiling_noise=0.001)
    copy_with(evaluated, evaluation=settings).save_pretrained(tmp_path / "settings")
    card = (tmp_path / "settings" / "README.md").read_text()
    assert "8 episodes per policy from the stochastic reset" in card
    assert "noise of 0.001 of each parameter's spread" in card
    # saving elsewhere carries the listed images along
    copy = loaded.save_pretrained(tmp_path / "copy")
    assert (copy / "returns_cdf.png").is_file()

    weights = path / "denoiser" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ChecksumError, match="sha256"):
        load_generator(path)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(FormatVersionError, match="version 99"):
        load_generator(copy)
    (copy / "config.json").write_text(json.dumps({**config, "format_version": 1}))
    with pytest.raises(FormatVersionError, match="qdzoo distill"):
        load_generator(copy)


def test_float16_weights_are_stored_and_loaded_exactly(
    generator: Generator, tmp_path: Path
) -> None:
    half = generator.with_weights_dtype("float16")
    assert half.config["weights_dtype"] == "float16" and "weights_dtype" not in generator.config
    for a, b in zip(leaves(half.vae), leaves(generator.vae), strict=True):
        assert a.dtype == b.dtype  # float32 in memory, rounded through float16
        if a.dtype == np.float32:
            np.testing.assert_array_equal(a, b.astype(np.float16).astype(np.float32))
    pairs = zip(leaves(half.vae), leaves(generator.vae), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)
    full, small = (
        copy_with(generator).save_pretrained(tmp_path / "full"),  # the fixture keeps its path
        half.save_pretrained(tmp_path / "half"),
    )
    folders = ("vae", "denoiser", "condition_encoder")
    for folder in folders:
        stored = load_file(str(small / folder / "model.safetensors"))
        assert {a.dtype for a in stored.values() if a.dtype.kind == "f"} == {np.dtype(np.float16)}
    size = {
        path: sum((path / f / "model.safetensors").stat().st_size for f in folders)
        for path in (full, small)
    }
    assert 0.45 < size[small] / size[full] < 0.6  # half, plus the headers of small files
    loaded = load_generator(small)
    assert loaded.config["weights_dtype"] == "float16"
    assert_same_weights(loaded, half)  # what was evaluated is what is loaded
    assert "weights stored in float16" in (small / "README.md").read_text()
    assert "weights stored in float16" not in (full / "README.md").read_text()
    with pytest.raises(ConfigError, match="weights_dtype"):
        generator.with_weights_dtype("bfloat16")


def test_loading_other_things_is_refused(archive: tuple[Path, ArchiveArtifact]) -> None:
    with pytest.raises(ArtifactError, match="load_archive"):
        load_generator(archive[0])
    with pytest.raises(ArtifactError, match="not a generator"):
        load_generator("walker2d-uni-map-elites")
    with pytest.raises(zoo.errors.UnknownModelError):
        load_generator("no-such-generator")


def test_push_to_hub_and_load_by_repo_id(hub_server: HubServer, generator: Generator) -> None:
    sha = generator.push_to_hub(REPO, token=hub_server.token)
    files = set(hub_server.files(REPO, sha))
    assert {"config.json", "README.md", "vae/model.safetensors", "denoiser/config.json"} <= files
    assert "metrics.jsonl" in files and not any(f.startswith(CHECKPOINT_DIR) for f in files)
    pulled = zoo.load_generator(REPO)
    assert_same_weights(pulled, generator)
    key = jax.random.key(7)
    assert_same_policies(
        pulled.sample(key, MEASURES, 2, steps=5), generator.sample(key, MEASURES, 2, steps=5)
    )
    assert generator.path is not None and generator.path.name == "run"  # unchanged by the push
