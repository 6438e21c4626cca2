"""Generator evaluation protocol, sequencing, and the `evaluate` / `sample` commands.

Everything runs on a tiny point-maze archive (30-step episodes, 8-unit policies) with fake
samplers: the elite nearest to each requested measure (a perfect generator) or one fixed
policy (a collapsed one), and with a real, untrained :class:`zoo.generator.Generator`.
Compiled functions are shared through module-scoped fixtures. Marked ``slow`` (a Brax
compile each, or a distillation): the sequencing loop against ``Task.evaluate`` on hopper
with terminations, the HTML render, and a tiny distilled generator end to end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from models.policy import MLPPolicy, PolicySpec
from models.policy_vae import count_parameters
from training import cli
from training.distill.evaluation import (
    archive_sample_fn,
    default_rollouts,
    evaluate_generator,
    format_metrics,
    generator_parameter_count,
    js_divergence,
    policy_parameter_count,
    record_in_generator,
    select_test_cells,
)
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_spec
from zoo.cvt import cvt_centroids, nearest_centroid
from zoo.errors import ConfigError, NonFiniteError, ShapeError, TaskMismatchError
from zoo.rollouts import render_html
from zoo.sequence import run_sequences, sequence, sequencing_success_rate
from zoo.tasks import make
from zoo.tasks.point_maze import in_goal, move

LENGTH = 30
HIDDEN = (8,)


# ------------------------------------------------------------------------ fixtures


def _artifact(task: Any, archive: Archive) -> ArchiveArtifact:
    spec = task.spec
    config = {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": task.default_policy().to_dict(),
        "archive": archive_spec(archive, spec.descriptor_names),
        "evaluation": {"reset": spec.reset, "episode_length": spec.episode_length, "seed": 0},
    }
    return ArchiveArtifact(archive, config)


@pytest.fixture(scope="module")
def maze() -> Any:
    return make("point-maze", episode_length=LENGTH, policy_hidden_sizes=HIDDEN)


@pytest.fixture(scope="module")
def tiny(maze: Any) -> ArchiveArtifact:
    """Random (scaled-up) policies on a 5x5 grid of final positions."""
    population = maze.init_genomes(jax.random.key(1), 128)
    population = jax.tree_util.tree_map(lambda x: 3.0 * x, population)
    result = maze.evaluate(population, jax.random.key(0))
    archive = Archive.grid(
        maze.default_policy().template(),
        (5, 5),
        maze.spec.descriptor_low,
        maze.spec.descriptor_high,
        qd_offset=maze.spec.qd_offset,
    )
    archive, _ = archive.insert(population, result.fitness, result.descriptors)
    return _artifact(maze, archive)


@pytest.fixture(scope="module")
def perfect(tiny: ArchiveArtifact, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("perfect")
    return evaluate_generator(
        archive_sample_fn(tiny.archive),
        tiny,
        jax.random.key(3),
        out_dir=out,
        batch_size=8,
        test_regions=6,
    )


def _fixed_sampler(archive: Archive) -> Any:
    cell = int(archive.elite_indices()[0])

    def sample_fn(key: Any, measures: Any) -> Any:
        n = measures.shape[0]
        return jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x[cell], (n, *x.shape[1:])), archive.genomes
        )

    return sample_fn


@pytest.fixture(scope="module")
def collapsed(tiny: ArchiveArtifact) -> dict[str, Any]:
    return evaluate_generator(
        _fixed_sampler(tiny.archive),
        tiny,
        jax.random.key(3),
        batch_size=8,
        test_regions=6,
        generator_parameters=100,
        ceiling_noise=0.0,
    )


def constant_policies(actions: Any) -> MLPPolicy:
    """Point-maze policies whose action is the given ``[n, 2]`` constant (in (-1, 1))."""
    actions = jnp.clip(jnp.asarray(actions, jnp.float32), -0.999, 0.999)
    n = actions.shape[0]
    template = PolicySpec(2, 2, HIDDEN).template()
    zeros = jax.tree_util.tree_map(lambda x: jnp.zeros((n, *x.shape)), template)
    biases = (zeros.biases[0], jnp.arctanh(actions))
    return eqx.tree_at(lambda p: p.biases, zeros, biases)


def constant_sampler(key: Any, measures: Any) -> MLPPolicy:
    """A sample_fn reading each measure row as the constant action of its policy."""
    return constant_policies(measures)


# ------------------------------------------------------------------- JS divergence


def test_js_divergence_of_known_distributions() -> None:
    low, high = (0.0, 0.0), (1.0, 1.0)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (200, 2))
    assert js_divergence(a, a, low, high) == 0.0
    assert js_divergence(a, a[::-1].copy(), low, high) == 0.0
    left, right = rng.uniform(0, 0.19, (50, 2)), rng.uniform(0.81, 1, (70, 2))
    assert js_divergence(left, right, low, high) == pytest.approx(math.log(2))
    # P all in one bin, Q half there and half in another: closed form.
    p = np.full((4, 2), 0.1)
    q = np.array([[0.1, 0.1], [0.1, 0.1], [0.9, 0.9], [0.9, 0.9]])
    expected = 0.5 * math.log(1 / 0.75) + 0.5 * (
        0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    )
    assert js_divergence(p, q, low, high) == pytest.approx(expected)
    assert js_divergence(q, p, low, high) == pytest.approx(expected)
    # Out-of-bounds samples count in the edge bins; non-finite rows are dropped.
    assert js_divergence([[-5.0, 0.1]], [[0.05, 0.1], [np.nan, 0.5]], low, high) == 0.0
    # One bin per dimension: everything is identical.
    assert js_divergence(left, right, low, high, bins=1) == 0.0
    with pytest.raises(ShapeError, match=r"\[n, 2\]"):
        js_divergence(np.zeros((3, 3)), np.zeros((3, 2)), low, high)
    with pytest.raises(ConfigError, match="bins"):
        js_divergence(a, a, low, high, bins=0)


# ------------------------------------------------------------------------ test set


def test_test_set_is_the_best_elite_of_each_cvt_region(tiny: ArchiveArtifact) -> None:
    archive = tiny.archive
    cells = select_test_cells(archive, regions=6, seed=0)
    assert 1 <= cells.size <= 6
    assert np.array_equal(cells, select_test_cells(archive, regions=6, seed=0))
    centroids = cvt_centroids(jax.random.key(0), 6, archive.low, archive.high)
    elites = archive.elite_indices()
    region = np.asarray(nearest_centroid(archive.descriptors[elites], centroids))
    fitness = np.asarray(archive.fitness)
    assert len(set(region)) == cells.size  # one elite per region that has elites
    for cell in cells:
        mine = elites[region == region[list(elites).index(cell)]]
        assert fitness[cell] == fitness[mine].max()
    many = select_test_cells(archive, regions=50)
    assert many.size <= archive.elite_indices().size


def test_parameter_counts(tiny: ArchiveArtifact) -> None:
    spec = PolicySpec(2, 2, HIDDEN)
    assert policy_parameter_count(tiny.archive) == spec.num_parameters
    assert count_parameters(spec.template()) == spec.num_parameters

    class Split(eqx.Module):
        encoder: Any
        decoder: Any

    class Gen:
        vae = Split(encoder=jnp.zeros(1000), decoder=jnp.zeros(7))
        denoiser = (jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
        measure_encoder = jnp.zeros(5)

    assert generator_parameter_count(Gen()) == 7 + 6 + 5

    class Counted:
        def num_parameters(self) -> dict[str, int]:
            return {"vae_encoder": 1000, "vae_decoder": 7, "denoiser": 6, "condition_encoder": 5}

    assert generator_parameter_count(Counted()) == 7 + 6 + 5


# ------------------------------------------------------------------------ protocol


def test_perfect_sampler_reproduces_the_archive(
    perfect: dict[str, Any], tiny: ArchiveArtifact
) -> None:
    m = perfect
    assert m["reward_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["offset_reward_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["js_divergence"] == pytest.approx(0.0, abs=1e-9)
    assert m["mem"] == pytest.approx(0.0, abs=1e-5)
    assert m["test_mem"] == pytest.approx(0.0, abs=1e-5)
    assert m["reconstructed_coverage"] == m["original_coverage"]
    assert m["reconstructed_num_elites"] == m["original_num_elites"]
    assert m["reconstructed_qd_score"] == pytest.approx(m["original_qd_score"], rel=1e-5)
    assert m["coverage_ratio"] == 1.0
    assert m["evaluation"]["rollouts"] == 1  # deterministic reset
    assert m["evaluation"]["test_set_size"] == select_test_cells(tiny.archive, 6).size
    assert m["evaluation"]["reconstruction_requests"] == tiny.archive.elite_indices().size
    assert m["compression_ratio"] is None  # a callable has no parameter count
    assert set(m["images"]) == {"returns_cdf", "heatmap_original", "heatmap_reconstructed"}
    for path in m["images"].values():
        assert Path(path).read_bytes()[:4] == b"\x89PNG"
    table = format_metrics(m)
    assert "reward ratio" in table and "reconstructed" in table


def test_collapsed_sampler_scores_low_coverage_and_high_divergence(
    collapsed: dict[str, Any], perfect: dict[str, Any]
) -> None:
    m = collapsed
    assert m["reconstructed_num_elites"] == 1
    assert m["coverage_ratio"] == pytest.approx(1 / m["original_num_elites"])
    assert m["js_divergence"] > 0.3
    assert m["mem"] > 0.1
    assert m["images"] == {}
    assert m["compression_ratio"] == pytest.approx(100 / m["archive_parameters"])
    assert m["compression_factor"] == pytest.approx(m["archive_parameters"] / 100)
    # The originals are the same under both samplers.
    assert m["original_return"] == perfect["original_return"]
    # The ceiling (the archive's own elites, noise 0) is the perfect sampler's evaluation on the
    # same requests and reset keys.
    assert m["ceiling_reward_ratio"] == perfect["reward_ratio"]
    assert m["ceiling_coverage_ratio"] == perfect["coverage_ratio"]
    assert m["ceiling_js_divergence"] == perfect["js_divergence"]
    assert m["evaluation"]["ceiling_noise"] == 0.0 and "ceiling_noise" not in perfect["evaluation"]
    assert "ceiling: coverage ratio" in format_metrics(m)


def test_a_robust_archive_is_evaluated_with_its_protocol_episodes(maze: Any) -> None:
    robust = {"evaluation": {"protocol": "robust", "episodes": 3, "seed": 0}}
    assert default_rollouts(robust, maze) == 3
    assert default_rollouts({"evaluation": {"reset": "deterministic"}}, maze) == 1
    stochastic = make("point-maze", episode_length=LENGTH, reset="stochastic")
    assert default_rollouts({}, stochastic) == 5


def test_stochastic_reset_rolls_each_policy_out_several_times(maze: Any) -> None:
    task = make("point-maze", episode_length=LENGTH, policy_hidden_sizes=HIDDEN, reset="stochastic")
    population = jax.tree_util.tree_map(lambda x: 3.0 * x, task.init_genomes(jax.random.key(1), 32))
    result = task.evaluate(population, jax.random.key(0))
    archive = Archive.grid(
        task.default_policy().template(), (3, 3), (-1, -1), (1, 1), qd_offset=task.spec.qd_offset
    )
    archive, _ = archive.insert(population, result.fitness, result.descriptors)
    artifact = _artifact(task, archive)
    m = evaluate_generator(
        archive_sample_fn(archive), artifact, jax.random.key(2), batch_size=16, test_regions=4
    )
    assert m["evaluation"]["rollouts"] == 5
    # Same policies and same reset keys for generated and original rows.
    assert m["reward_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["js_divergence"] == pytest.approx(0.0, abs=1e-9)
    assert m["mem"] > 0  # stochastic starts move the final positions away from the stored ones


def test_archive_sample_fn_with_parameter_noise(tiny: ArchiveArtifact) -> None:
    archive = tiny.archive
    cells = tiny.elite_indices()
    measures = jnp.asarray(archive.descriptors)[cells]
    exact = archive_sample_fn(archive)(jax.random.key(0), measures)
    noisy = archive_sample_fn(archive, noise=0.1)(jax.random.key(0), measures)
    elites = jax.tree_util.tree_map(lambda x: x[cells], archive.genomes)
    np.testing.assert_array_equal(ravel_pytree(exact)[0], ravel_pytree(elites)[0])
    # the noise is 0.1 of each scalar's spread over the elites
    spread = jax.tree_util.tree_map(lambda x: jnp.std(x, axis=0), elites)
    scaled = jax.tree_util.tree_map(
        lambda a, b, s: (a - b) / jnp.where(s > 0, s, 1.0), noisy, exact, spread
    )
    varying = ravel_pytree(
        jax.tree_util.tree_map(lambda s: jnp.broadcast_to(s > 0, (cells.size, *s.shape)), spread)
    )[0]
    z = np.asarray(ravel_pytree(scaled)[0])[np.asarray(varying)]
    assert z.std() == pytest.approx(0.1, rel=0.1) and abs(z.mean()) < 0.02
    with pytest.raises(ConfigError, match="noise"):
        archive_sample_fn(archive, noise=-1.0)


def test_bad_inputs_are_refused(tiny: ArchiveArtifact) -> None:
    sample_fn = archive_sample_fn(tiny.archive)
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match="ArchiveArtifact"):
        evaluate_generator(sample_fn, tiny.archive, key)
    with pytest.raises(ConfigError, match="rollouts"):
        evaluate_generator(sample_fn, tiny, key, rollouts=0)
    with pytest.raises(ConfigError, match="sample"):
        evaluate_generator(42, tiny, key)

    def nan_sampler(key: Any, measures: Any) -> Any:
        policies = sample_fn(key, measures)
        return eqx.tree_at(lambda p: p.biases[0], policies, policies.biases[0] * jnp.nan)

    with pytest.raises(NonFiniteError, match="NaN"):
        evaluate_generator(nan_sampler, tiny, key, batch_size=8, test_regions=6)

    def short_sampler(key: Any, measures: Any) -> Any:
        return jax.tree_util.tree_map(lambda x: x[:1], sample_fn(key, measures))

    with pytest.raises(ShapeError, match="one policy per requested measure"):
        evaluate_generator(short_sampler, tiny, key, batch_size=8, test_regions=6)

    class WrongTask:
        def check_task(self, task: Any) -> None:
            raise TaskMismatchError(f"generator for walker2d-uni used with {task.spec.name}")

        def sample(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("never sampled")

    with pytest.raises(TaskMismatchError, match="point-maze"):
        evaluate_generator(WrongTask(), tiny, key)


def test_record_in_generator(perfect: dict[str, Any]) -> None:
    class Gen:
        config: dict[str, Any] = {"metrics": {"vae_loss": 0.5}}

    generator = Gen()
    record_in_generator(generator, perfect)
    metrics = generator.config["metrics"]
    assert metrics["vae_loss"] == 0.5
    assert metrics["reward_ratio"] == perfect["reward_ratio"]
    assert metrics["compression_ratio"] is None
    assert "images" not in metrics and "evaluation" not in metrics
    assert generator.config["images"]["returns_cdf"] == "returns_cdf.png"
    assert generator.config["evaluation"]["test_regions"] == 6
    json.dumps(generator.config)


# ---------------------------------------------------------------------- sequencing


def test_same_policy_in_every_segment_equals_evaluate(maze: Any, tiny: ArchiveArtifact) -> None:
    cells = tiny.archive.elite_indices()[:4]
    policies = tiny.genomes(cells)
    result = maze.evaluate(policies, jax.random.key(0), transitions=True)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3, axis=1), policies)
    runs = run_sequences(maze, stacked, jax.random.key(0), 10)
    np.testing.assert_allclose(runs.episode_return, result.fitness, rtol=1e-6)
    np.testing.assert_array_equal(runs.length, result.transitions.valid.sum(axis=1))
    np.testing.assert_allclose(runs.segment_returns.sum(axis=1), result.fitness, rtol=1e-5)
    np.testing.assert_array_equal(runs.segment_steps, np.full((4, 3), 10))
    # The last segment ends where the episode ends: the final position.
    np.testing.assert_allclose(runs.segment_descriptors[:, -1], result.descriptors, atol=1e-6)
    one = sequence(maze, [tiny.genomes(cells[0])] * 3, 10, key=jax.random.key(0))
    assert float(one.episode_return) == pytest.approx(float(result.fitness[0]), rel=1e-6)
    assert one.conditions is None


def test_each_segment_uses_its_own_policy(maze: Any) -> None:
    actions = [[0.9, 0.0], [-0.9, 0.0], [-0.9, 0.0]]
    result = sequence(maze, constant_policies(actions), 10, key=jax.random.key(0))
    expected = np.array([[0.9, -0.85], [0.0, -0.85], [-0.9, -0.85]])
    np.testing.assert_allclose(result.segment_descriptors, expected, atol=1e-4)
    np.testing.assert_array_equal(result.segment_steps, [10, 10, 10])
    assert int(result.length) == LENGTH
    # Fewer segments than the episode: the last policy keeps acting to the end.
    short = sequence(maze, constant_policies(actions[:2]), 10, key=jax.random.key(0))
    np.testing.assert_array_equal(short.segment_steps, [10, 20])
    np.testing.assert_allclose(short.segment_descriptors[-1], [-0.9, -0.85], atol=1e-4)
    # Conditions go through the generator (a sample_fn here), one policy per segment.
    conditioned = sequence(
        maze, np.asarray(actions), 10, generator=constant_sampler, key=jax.random.key(0)
    )
    np.testing.assert_allclose(conditioned.segment_descriptors, expected, atol=1e-4)
    np.testing.assert_allclose(conditioned.conditions, actions)
    with pytest.raises(ConfigError, match="generator"):
        sequence(maze, np.asarray(actions), 10, key=jax.random.key(0))
    with pytest.raises(ShapeError, match=r"\[S, k\]"):
        sequence(maze, [[0.1, 0.2, 0.3]], 10, generator=constant_sampler, key=jax.random.key(0))
    with pytest.raises(ConfigError, match="steps_per_segment"):
        sequence(maze, constant_policies(actions), 0, key=jax.random.key(0))


# A route through the maze with 4 equal windows of 20 steps (episode of 80): reaches the
# goal on step 60 (75% of the episode, a "fall" under the 80% rule).
ROUTE = [[-0.9, 0.4], [0.85, 0.1], [-0.6, 0.325], [0.0, 0.0]]


def test_termination_ends_the_sequence_and_counts_against_success() -> None:
    task = make("point-maze", episode_length=80, policy_hidden_sizes=HIDDEN)
    position = jnp.asarray([0.0, -0.85])
    reached = None
    for t in range(80):
        position = move(position, jnp.asarray(ROUTE[t // 20], jnp.float32))
        if bool(in_goal(position)):
            reached = t + 1
            break
    assert reached == 60
    result = sequence(
        task, np.asarray(ROUTE), 20, generator=constant_sampler, key=jax.random.key(0)
    )
    assert int(result.length) == 60
    np.testing.assert_array_equal(result.segment_steps, [20, 20, 20, 0])
    assert np.all(np.isnan(np.asarray(result.segment_descriptors[3])))
    conditions = np.stack([np.asarray(ROUTE), np.zeros((4, 2))])  # route, then standing still
    rate = sequencing_success_rate(task, constant_sampler, conditions, jax.random.key(0))
    assert rate == 0.5
    assert (
        sequencing_success_rate(task, constant_sampler, conditions, jax.random.key(0), 4, 0.7) == 1
    )
    with pytest.raises(ShapeError, match="4 conditions per episode"):
        sequencing_success_rate(task, constant_sampler, conditions[:, :3], jax.random.key(0))
    with pytest.raises(ConfigError, match="threshold"):
        sequencing_success_rate(task, constant_sampler, conditions, jax.random.key(0), 4, 1.5)
    with pytest.raises(ConfigError, match="policy tasks"):
        sequence(
            make("arm"), np.asarray(ROUTE), 20, generator=constant_sampler, key=jax.random.key(0)
        )


@pytest.mark.slow
def test_brax_sequence_matches_evaluate_with_terminations() -> None:
    task = make("hopper-uni", episode_length=25, policy_hidden_sizes=HIDDEN)
    population = jax.tree_util.tree_map(lambda x: 3.0 * x, task.init_genomes(jax.random.key(0), 3))
    result = jax.jit(lambda p, k: task.evaluate(p, k, transitions=True))(
        population, jax.random.key(1)
    )
    # Two segments, the first as long as the episode: the second never starts.
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x], axis=1), population)
    runs = run_sequences(task, stacked, jax.random.key(1), 25)
    lengths = np.asarray(result.transitions.valid.sum(axis=1))
    assert lengths.min() < 25  # some hopper falls: termination is exercised
    np.testing.assert_array_equal(runs.length, lengths)
    np.testing.assert_allclose(runs.episode_return, result.fitness, rtol=1e-5)
    np.testing.assert_allclose(runs.segment_descriptors[:, 0], result.descriptors, atol=1e-6)
    np.testing.assert_array_equal(runs.segment_steps[:, 1], 0)


@pytest.mark.slow
def test_render_writes_brax_html_viewer(tmp_path: Path) -> None:
    """`qdzoo sample --render`: brax's HTML viewer of one rollout."""
    task = make("hopper-uni", episode_length=25, policy_hidden_sizes=HIDDEN)
    policy = task.default_policy().init(jax.random.key(0))
    page = render_html(task, policy, jax.random.key(1), tmp_path / "out" / "hopper.html")
    assert "<html" in page.read_text().lower()


# ---------------------------------------------------------------------------- CLI


class FakeGenerator:
    """The Generator API the commands use, sampling the nearest elite of an archive."""

    def __init__(self, artifact: ArchiveArtifact) -> None:
        self.artifact = artifact
        spec = artifact.task_spec
        self.descriptor_low, self.descriptor_high = spec.descriptor_low, spec.descriptor_high
        self.config: dict[str, Any] = {"descriptor_names": list(spec.descriptor_names)}
        self.saved: list[Path] = []

    def make_task(self) -> Any:
        return self.artifact.make_task()

    def check_task(self, task: Any) -> None:
        if task.spec.name != self.artifact.task_spec.name:
            raise TaskMismatchError("wrong task")

    def sample(self, key: Any, measures: Any, num_samples: int = 1, **kwargs: Any) -> Any:
        values = np.atleast_2d(np.asarray(measures, np.float32))
        if kwargs.get("clip"):
            values = np.clip(values, self.descriptor_low, self.descriptor_high)
        elif np.any(values < self.descriptor_low) or np.any(values > self.descriptor_high):
            raise ConfigError("measures outside the bounds; pass clip=True")
        values = np.repeat(values, num_samples, axis=0)
        return archive_sample_fn(self.artifact.archive)(key, jnp.asarray(values))

    def save_pretrained(self, path: Path) -> None:
        Path(path, "config.json").write_text(json.dumps(self.config))
        self.saved.append(Path(path))


def test_cli_sample_prints_requested_and_achieved(
    tiny: ArchiveArtifact, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_load_generator", lambda name: FakeGenerator(tiny))
    elite = np.asarray(tiny.archive.descriptors)[tiny.archive.elite_indices()[0]]
    code = cli.main(["sample", "gen", "--measures", *map(str, elite), "--n", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("task point-maze")
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and "requested" in lines[1]
    assert float(rows[0].split()[-2]) == pytest.approx(0.0, abs=1e-4)  # error of an elite
    # Bad measures: one error line, exit status 2.
    assert cli.main(["sample", "gen", "--measures", "0.2", "0.5", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --measures takes 2 numbers")
    assert cli.main(["sample", "gen", "--measures", "3", "0"]) == 2
    assert "outside the bounds" in capsys.readouterr().err
    assert cli.main(["sample", "gen", "--measures", "3", "0", "--clip"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", "gen", "--measures", "0", "0", "--render", "x.html"]) == 2
    assert "--render needs a Brax task" in capsys.readouterr().err
    assert cli.main(["sample", "gen", "--measures", "0", "0", "--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err


def test_cli_evaluate_prints_and_records(
    tiny: ArchiveArtifact,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    generator = FakeGenerator(tiny)
    monkeypatch.setattr(cli, "_load_generator", lambda name: generator)
    archive_dir = tiny.save_pretrained(tmp_path / "archive", plot=False)
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    args = ["evaluate", str(gen_dir), "--archive", str(archive_dir), "--test-regions", "6"]
    assert cli.main([*args, "--batch-size", "8", "--record"]) == 0
    out = capsys.readouterr().out
    assert "reward ratio" in out and "1.0000" in out
    assert generator.saved == [gen_dir]
    assert generator.config["metrics"]["reward_ratio"] == pytest.approx(1.0)
    assert sorted(generator.config["images"].values()) == [
        "heatmap_original.png",
        "heatmap_reconstructed.png",
        "returns_cdf.png",
    ]
    assert all((gen_dir / name).is_file() for name in generator.config["images"].values())
    # Without --archive: the source archive the generator's config names.
    generator.config["source_archive"] = {"name": str(archive_dir)}
    assert cli.main(["evaluate", str(gen_dir), "--test-regions", "6", "--batch-size", "8"]) == 0
    assert "reward ratio" in capsys.readouterr().out
    del generator.config["source_archive"]
    assert cli.main(["evaluate", str(gen_dir)]) == 2
    assert "pass --archive" in capsys.readouterr().err
    # --record needs a local directory.
    assert cli.main(["evaluate", "some/repo", "--archive", str(archive_dir), "--record"]) == 2
    assert "local generator directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", str(gen_dir), "--archive", str(archive_dir), "--sampler", "x"])


# ------------------------------------------------------------- with a real Generator


def _tiny_generator(artifact: ArchiveArtifact) -> Any:
    """An untrained :class:`zoo.generator.Generator` with tiny modules for ``artifact``."""
    import zoo.generator
    from models.denoiser import ConditionalDenoiser, MeasureEncoder
    from models.policy_vae import PolicyVAE

    keys = jax.random.split(jax.random.key(0), 3)
    spec = artifact.task_spec
    vae = PolicyVAE(
        artifact.policy_spec,
        latent_size=8,
        cnn_channels=(2, 2),
        vector_width=8,
        projection_width=16,
        node_size=4,
        message_rounds=1,
        num_heads=1,
        head_width=4,
        normaliser_width=8,
        key=keys[0],
    )
    encoder = MeasureEncoder(spec.descriptor_size, num_tokens=1, token_size=8, width=8, key=keys[1])
    denoiser = ConditionalDenoiser(
        8, 8, num_condition_tokens=1, width=16, num_blocks=1, num_heads=1,
        time_embedding_size=8, key=keys[2],
    )  # fmt: skip
    config = {
        "task": artifact.config["task"],
        "policy": artifact.policy_spec.to_dict(),
        "descriptors": {
            "names": list(spec.descriptor_names),
            "low": list(spec.descriptor_low),
            "high": list(spec.descriptor_high),
        },
    }
    schedule = zoo.generator.make_schedule({"num_timesteps": 50})
    return zoo.generator.Generator(vae, denoiser, encoder, schedule, 1.0, config)


def test_real_generator_end_to_end(
    tiny: ArchiveArtifact, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """evaluate --record, sample and sequence with a real (untrained) Generator on disk.

    Every sampling call asks for 8 policies, so the sampler compiles once."""
    generator = _tiny_generator(tiny)
    archive_dir = tiny.save_pretrained(tmp_path / "archive", plot=False)
    generator.config["source_archive"] = {"name": str(archive_dir)}
    gen_dir = generator.save_pretrained(tmp_path / "gen")
    steps = ["--sampler", "ddim", "--steps", "5"]
    code = cli.main(
        ["evaluate", str(gen_dir), *steps, "--test-regions", "6", "--batch-size", "8", "--record"]
    )
    assert code == 0, capsys.readouterr().err
    assert "compression ratio" in capsys.readouterr().out
    config = json.loads((gen_dir / "config.json").read_text())
    assert {"reward_ratio", "js_divergence", "coverage_ratio", "compression_ratio"} <= set(
        config["metrics"]
    )
    assert config["metrics"]["compression_ratio"] > 0
    assert config["evaluation"]["sampler"] == "ddim" and config["evaluation"]["steps"] == 5
    card = (gen_dir / "README.md").read_text()
    for name in config["images"].values():
        assert (gen_dir / name).is_file() and name in card
    assert "reward" in card

    code = cli.main(["sample", str(gen_dir), "--measures", "0.2", "-0.5", "--n", "8", *steps])
    out = capsys.readouterr().out
    assert code == 0
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 8
    assert cli.main(["sample", str(gen_dir), "--measures", "5", "0", *steps]) == 2
    assert "outside the descriptor bounds" in capsys.readouterr().err

    # Sequencing with conditions: one generated policy per segment.
    task = generator.make_task()
    conditions = np.linspace(-0.5, 0.5, 16).reshape(8, 2)
    result = sequence(task, conditions, 4, generator=generator, key=jax.random.key(0), steps=5)
    assert result.segment_steps.shape == (8,) and int(result.length) == LENGTH
    wrong = make("point-maze", episode_length=LENGTH, policy_hidden_sizes=(4,))
    with pytest.raises(TaskMismatchError, match="point-maze"):
        sequence(wrong, conditions, 4, generator=generator, key=jax.random.key(0))


@pytest.mark.slow
def test_tiny_distilled_generator_is_evaluated(tiny: ArchiveArtifact, tmp_path: Path) -> None:
    """The whole path: distil a tiny generator, evaluate it, record, reload."""
    from training.distill import DistillConfig, distill
    from zoo.generator import load_generator

    config = DistillConfig(
        vae={
            "latent_size": 8, "cnn_channels": (2, 2), "vector_width": 8,
            "projection_width": 16, "node_size": 4, "num_heads": 1, "head_width": 4,
            "normaliser_width": 8, "message_rounds": 1, "basis_size": 4, "basis_width": 8,
        },
        denoiser={"width": 16, "num_blocks": 1, "num_heads": 1, "time_embedding_size": 8},
        condition_encoder={"num_tokens": 1, "token_size": 8, "width": 8},
        vae_steps=20, diffusion_steps=20, num_timesteps=50, batch_size=8, eval_every=20,
        chunk=20,
    )  # fmt: skip
    archive_dir = tiny.save_pretrained(tmp_path / "archive", plot=False)
    generator = distill(tiny, config, tmp_path / "gen", progress=False, source=str(archive_dir))
    assert cli.source_archive(generator) == str(archive_dir)
    metrics = evaluate_generator(
        generator, tiny, jax.random.key(0), steps=5, batch_size=8, test_regions=6,
        out_dir=tmp_path / "gen",
    )  # fmt: skip
    for name in ("reward_ratio", "js_divergence", "mem", "coverage_ratio", "compression_ratio"):
        assert math.isfinite(metrics[name])
    assert 0.0 <= metrics["js_divergence"] <= math.log(2)
    record_in_generator(generator, metrics)
    generator.save_pretrained(tmp_path / "gen")
    again = load_generator(str(tmp_path / "gen"))
    assert again.config["metrics"]["reward_ratio"] == pytest.approx(metrics["reward_ratio"])
