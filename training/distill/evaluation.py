"""How well a generator reproduces the archive it was distilled from (the paper's protocol).

:func:`evaluate_generator` takes a generator (or any ``sample_fn(key, measures [n, k]) ->
n policies``) and the source :class:`~zoo.archive_artifact.ArchiveArtifact`, and measures:

- **Test set**: the descriptor box is cut into ``test_regions`` (50) regions by a CVT
  (:func:`zoo.cvt.cvt_centroids`, seeded by ``test_set_seed``); every elite belongs to the
  region of its nearest centroid; the elite of a region is its best-fitness member
  (regions without elites are skipped, so the test set has at most 50 policies). See
  :func:`select_test_cells`.
- **Reward ratio**: mean return of the policies generated for the test elites' measures
  divided by the mean return of the test elites themselves, both rolled out ``rollouts``
  times under the task's reset protocol (the originals are re-evaluated, not read from the
  archive; row ``i`` of both sets gets the same reset keys). The ratio means what it says
  for positive returns (the locomotion tasks); ``offset_reward_ratio`` divides the returns
  minus the task's QD offset (non-negative) and stays meaningful for negative returns
  (point-maze).
- **JS divergence**: :func:`js_divergence` between the achieved measures of the generated
  test policies and those of the re-evaluated originals (one sample per rollout).
- **Reconstructed archive**: one policy is generated for each occupied cell's measures
  (elite descriptors), rolled out, and inserted (mean return and descriptors over the
  rollouts) into a fresh elitist archive of the same tessellation and QD offset; its QD
  score, coverage, number of elites and best fitness are reported next to the original's
  (as stored in the artifact) with their ratios. The test-set policies are the
  reconstruction's policies for the test cells (sampled once).
- **MEM** (mean measure error): mean L2 distance between requested and achieved measures,
  over every reconstruction request and rollout (``mem``), and over the test set
  (``test_mem``).
- **Compression ratio**: generator parameters (decoder + denoiser + measure encoder, see
  :func:`generator_parameter_count`; the VAE's encoder is not needed to sample) divided by
  the parameters of all archive policies (``num_elites * parameters per policy``).
  ``compression_factor`` is its inverse (the paper's "13:1" is a factor of 13).
- **Images** (with ``out_dir``): ``returns_cdf.png`` (percentage of cells whose elite's
  return is at least ``x``, original vs reconstructed), ``heatmap_original.png`` and
  ``heatmap_reconstructed.png`` (:func:`zoo.plot.plot_archive`; each has its own colour
  scale).

Everything is batched: requests are cut in chunks of ``batch_size`` rows, the last one
padded by repeating its first row, so the sampler and ``Task.evaluate`` compile once for
the whole evaluation (and once per task and chunk size for the whole process).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from models.policy_vae import count_parameters
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact
from zoo.artifact import finite_or_none
from zoo.cvt import cvt_centroids, nearest_centroid
from zoo.errors import ConfigError, NonFiniteError, ShapeError
from zoo.evaluation import evaluate_in_chunks, reevaluate, task_of
from zoo.robust import RobustProtocol, is_robust
from zoo.sequence import SampleFn, as_sample_fn
from zoo.tasks.base import Task

__all__ = [
    "DEFAULT_JS_BINS",
    "archive_sample_fn",
    "default_rollouts",
    "evaluate_generator",
    "format_metrics",
    "generator_parameter_count",
    "js_divergence",
    "plot_returns_cdf",
    "policy_parameter_count",
    "record_in_generator",
    "select_test_cells",
]

DEFAULT_JS_BINS = 5
"""Histogram bins per descriptor dimension of :func:`js_divergence` (25 bins in 2-D)."""

IMAGE_NAMES = {
    "returns_cdf": "returns_cdf.png",
    "heatmap_original": "heatmap_original.png",
    "heatmap_reconstructed": "heatmap_reconstructed.png",
}

# ------------------------------------------------------------------ small measures


def js_divergence(
    p_samples: Float[ArrayLike, "n k"],
    q_samples: Float[ArrayLike, "m k"],
    low: Sequence[float],
    high: Sequence[float],
    bins: int = DEFAULT_JS_BINS,
) -> float:
    """Jensen-Shannon divergence between two sample sets of measures, by histograms.

    The box ``[low, high]`` is cut into ``bins`` equal intervals per dimension (a joint
    histogram of ``bins**k`` cells; samples outside the box count in the edge cells, rows
    holding a non-finite value are dropped). With ``P`` and ``Q`` the normalised histograms
    and ``M = (P + Q) / 2``: ``JS = (KL(P || M) + KL(Q || M)) / 2`` in nats (natural log),
    so ``0 <= JS <= ln 2``: 0 for identical histograms, ``ln 2`` for disjoint ones.

    Args:
        p_samples: ``[n, k]`` measures (``[n]`` is read as ``k = 1``).
        q_samples: ``[m, k]`` measures.
        low: lower bound of each of the ``k`` dimensions.
        high: upper bound of each dimension.
        bins: intervals per dimension (default 5: 25 cells in 2-D, 625 in 4-D).

    Raises:
        ShapeError: sample sets of different ``k``, or ``k`` unlike the bounds.
        ConfigError: ``bins < 1``, or a sample set with no finite row.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ConfigError(f"bins must be an integer >= 1 (per dimension), given {bins!r}")
    lower = np.asarray(low, np.float64).reshape(-1)
    upper = np.asarray(high, np.float64).reshape(-1)
    k = lower.shape[0]
    sets = []
    for name, samples in (("p_samples", p_samples), ("q_samples", q_samples)):
        values = np.asarray(samples, np.float64)
        values = values.reshape(-1, 1) if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[1] != k:
            raise ShapeError(
                f"{name} must have shape [n, {k}] (one row of {k} measures per sample, as "
                f"many as the bounds), given {np.shape(samples)}"
            )
        values = values[np.all(np.isfinite(values), axis=1)]
        if values.shape[0] == 0:
            raise ConfigError(f"{name} holds no finite row; nothing to compare")
        scaled = (values - lower) / (upper - lower) * bins
        index = np.clip(np.floor(scaled), 0, bins - 1).astype(np.int64)
        sets.append(np.ravel_multi_index(tuple(index.T), (bins,) * k))
    cells, inverse = np.unique(np.concatenate(sets), return_inverse=True)
    n = sets[0].shape[0]
    p = np.bincount(inverse[:n], minlength=cells.shape[0]) / n
    q = np.bincount(inverse[n:], minlength=cells.shape[0]) / (inverse.shape[0] - n)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / m[mask])))

    return min(max(0.5 * (kl(p) + kl(q)), 0.0), math.log(2.0))


def policy_parameter_count(archive: Archive) -> int:
    """Parameters of ONE genome of ``archive`` (every float leaf of a cell)."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(archive.genomes, eqx.is_inexact_array))
    return int(sum(int(np.prod(x.shape[1:])) for x in leaves))


def generator_parameter_count(generator: Any) -> int:
    """Parameters a generator needs to sample: decoder + denoiser + condition encoder.

    Uses ``generator.num_parameters()`` (:class:`zoo.generator.Generator`: the parts
    ``vae_decoder`` (with the archive statistics it decodes with), ``denoiser`` and
    ``condition_encoder``) when there is one; otherwise counts ``generator.vae.decoder``
    (or ``generator.decoder``), ``generator.denoiser`` and ``generator.measure_encoder`` (or
    ``generator.condition_encoder``). The VAE's encoder is never counted: sampling does not
    use it. A generator with none of these parts is counted whole.
    """
    counts = getattr(generator, "num_parameters", None)
    if callable(counts):
        parts = counts()
        return int(
            sum(parts.get(name, 0) for name in ("vae_decoder", "denoiser", "condition_encoder"))
        )
    vae = getattr(generator, "vae", None)
    decoder = getattr(vae, "decoder", None) if vae is not None else None
    decoder = decoder if decoder is not None else getattr(generator, "decoder", None)
    encoder = getattr(generator, "measure_encoder", None)
    encoder = encoder if encoder is not None else getattr(generator, "condition_encoder", None)
    modules = [m for m in (decoder, getattr(generator, "denoiser", None), encoder) if m is not None]
    return count_parameters(modules if modules else generator)


# ------------------------------------------------------------------------ test set

_nearest_centroid = jax.jit(nearest_centroid)


def select_test_cells(archive: Archive, regions: int = 50, seed: int = 0) -> Int[np.ndarray, " n"]:
    """Cells of the test elites: the best elite of each of ``regions`` CVT regions.

    The CVT centroids come from :func:`zoo.cvt.cvt_centroids` over the archive's descriptor
    box with key ``jax.random.key(seed)``; every elite belongs to the region of the centroid
    nearest to its stored descriptors; the best-fitness elite of each region with elites is
    returned (ties: lowest cell), ordered by region.

    Returns:
        ``[n]`` cell indices, ``n <= min(regions, num_elites)``.

    Raises:
        ConfigError: ``regions < 1`` or an empty archive.
    """
    if isinstance(regions, bool) or not isinstance(regions, int | np.integer) or regions < 1:
        raise ConfigError(f"test_regions must be an integer >= 1, given {regions!r}")
    cells = archive.elite_indices()
    if cells.size == 0:
        raise ConfigError("the archive holds no elite; there is nothing to evaluate against")
    samples = max(50_000, 50 * int(regions))
    centroids = cvt_centroids(
        jax.random.key(seed), int(regions), archive.low, archive.high, num_samples=samples
    )
    descriptors = jnp.asarray(np.asarray(archive.descriptors)[cells], centroids.dtype)
    region = np.asarray(_nearest_centroid(descriptors, centroids))
    fitness = np.asarray(archive.fitness)[cells]
    chosen = []
    for r in np.unique(region):
        members = np.flatnonzero(region == r)
        chosen.append(cells[members[np.argmax(fitness[members])]])
    return np.asarray(chosen, np.int64)


def archive_sample_fn(archive: Archive, noise: float = 0.0) -> SampleFn:
    """``sample_fn(key, measures [n, k])`` returning the elite nearest to each measure.

    The "choose from the archive" baseline (and a perfect generator for the archive's own
    measures). With ``noise > 0`` every returned scalar gets Gaussian noise of ``noise`` times
    that scalar's standard deviation over the archive's elites (drawn from ``key``): the
    archive's own tolerance to the reconstruction error of a generator (how far its rollouts
    move when the parameters are off by a given fraction of the archive's spread).
    """
    cells = np.flatnonzero(np.asarray(archive.occupied))
    if noise < 0 or not math.isfinite(noise):
        raise ConfigError(f"noise must be a finite number >= 0, given {noise!r}")
    elites = jax.tree_util.tree_map(lambda x: x[cells], archive.genomes)
    spread = jax.tree_util.tree_map(lambda x: jnp.std(x, axis=0), elites)

    def sample_fn(key: PRNGKeyArray, measures: Float[Array, "n k"]) -> Any:
        chosen = archive.nearest(jnp.asarray(measures, archive.descriptors.dtype))
        policies = jax.tree_util.tree_map(lambda x: x[chosen], archive.genomes)
        if noise == 0:
            return policies
        leaves, treedef = jax.tree_util.tree_flatten(policies)
        keys = jax.random.split(key, len(leaves))
        noisy = [
            x + noise * sd * jax.random.normal(k, x.shape, x.dtype)
            for x, sd, k in zip(leaves, jax.tree_util.tree_leaves(spread), keys, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, noisy)

    return sample_fn


# ---------------------------------------------------------------------- evaluation


def default_rollouts(config: dict[str, Any], task: Task) -> int:
    """Episodes per policy when none are asked for: the robust protocol's ``K`` for a
    robustly re-evaluated archive (its own figures are means over ``K`` episodes), else 1 for
    a deterministic reset and 5 for a stochastic one."""
    if is_robust(config):
        return RobustProtocol.from_config(config).episodes
    return 1 if task.spec.reset == "deterministic" else 5


def _check_population(policies: Any, size: int, task: Task) -> None:
    """The sampler returned ``size`` finite policies; else a clear error."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(policies, eqx.is_array))
    if not leaves or any(x.shape[:1] != (size,) for x in leaves):
        got = [tuple(x.shape) for x in leaves[:2]]
        raise ShapeError(
            f"the sampler must return one policy per requested measure (a population with "
            f"leading axis {size}), returned leaves of shape {got}"
        )
    finite = jnp.stack([jnp.all(jnp.isfinite(x).reshape(size, -1), axis=1) for x in leaves])
    bad = int(jnp.sum(~jnp.all(finite, axis=0)))
    if bad:
        raise NonFiniteError(
            f"{bad} of {size} sampled policies hold NaN or infinite parameters; they are not "
            f"evaluated on {task.spec.name!r}. Check the generator (or sample with another "
            "sampler / fewer guidance)"
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, given {value!r}")
    return int(value)


def _reconstructed_archive(
    original: Archive, fitness: np.ndarray, descriptors: np.ndarray
) -> Archive:
    """A fresh elitist archive of ``original``'s tessellation holding the given solutions.

    Genomes are the row indices (float scalars): the metrics and heatmaps need none.
    """
    template = jnp.zeros((), jnp.float32)
    common = dict(qd_offset=original.qd_offset)
    if original.tessellation == "grid":
        assert original.grid_shape is not None
        fresh = Archive.grid(
            template,
            original.grid_shape,
            original.low,
            original.high,
            epsilon=original.epsilon,
            **common,
        )
    else:
        fresh = Archive.cvt(template, original.centroids, original.low, original.high, **common)
    rows = jnp.arange(fitness.shape[0], dtype=jnp.float32)
    archive, _ = fresh.insert(rows, jnp.asarray(fitness), jnp.asarray(descriptors))
    return archive


def evaluate_generator(
    generator_or_sample_fn: Any,
    archive: ArchiveArtifact,
    key: PRNGKeyArray,
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 1.0,
    out_dir: str | Path | None = None,
    batch_size: int = 256,
    test_regions: int = 50,
    rollouts: int | None = None,
    test_set_seed: int = 0,
    js_bins: int = DEFAULT_JS_BINS,
    generator_parameters: int | None = None,
    ceiling_noise: float | None = None,
) -> dict[str, Any]:
    """Evaluate a generator against its source archive (see the module docstring).

    Args:
        generator_or_sample_fn: a :class:`zoo.generator.Generator`, or ``sample_fn(key,
            measures [n, k]) -> policies`` returning a population of ``n`` policies.
        archive: the archive artifact the generator was distilled from.
        key: randomness for sampling and (stochastic tasks) resets.
        sampler, steps, guidance: passed to ``generator.sample`` (ignored for a callable).
        out_dir: where to write the PNGs (created); ``None`` writes none.
        batch_size: rows per sampling / evaluation call (every call has this many rows,
            or the number of elites if smaller).
        test_regions: CVT regions of the test set (50 in the paper).
        rollouts: episodes per policy; default: the archive's robust protocol's ``K``
            (:mod:`zoo.robust`) for a robustly re-evaluated archive, else 1 for a
            deterministic reset and 5 for a stochastic one.
        test_set_seed: seed of the test-set CVT (kept apart from ``key`` so that every
            generator is tested on the same elites).
        js_bins: histogram bins per descriptor dimension of the JS divergence.
        generator_parameters: parameter count of the generator for the compression ratio;
            default: :func:`generator_parameter_count` of a generator, none for a callable.
        ceiling_noise: also measure the archive's own ceiling: its elites with this much
            parameter noise (:func:`archive_sample_fn`) in place of the generator, on the same
            requests, test set and reset keys. Its ``reward_ratio``, ``coverage_ratio`` and
            ``js_divergence`` are returned as ``ceiling_*`` (and the noise as
            ``evaluation["ceiling_noise"]``): what a perfect generator, off by that much,
            would score under the same protocol.

    Returns:
        A dict of numbers (``reward_ratio``, ``js_divergence``, ``mem``, ``test_mem``,
        ``original_*`` and ``reconstructed_*`` QD score / coverage / elites / max fitness,
        ``qd_score_ratio``, ``coverage_ratio``, ``compression_ratio`` (``None`` when
        unknown), ...), the settings under ``"evaluation"``, and ``"images"``
        (``{name: path}``, empty without ``out_dir``).

    Raises:
        ConfigError: bad settings, a non-policy task or an empty archive.
        TaskMismatchError: a generator made for another task (``generator.check_task``).
        ShapeError / NonFiniteError: a sampler returning the wrong number of policies or
            non-finite parameters.
    """
    started = time.perf_counter()
    if not isinstance(archive, ArchiveArtifact):
        raise ConfigError(
            f"archive must be an ArchiveArtifact (zoo.load_archive(name)), given "
            f"{type(archive).__name__}"
        )
    batch_size = _positive_int("batch_size", batch_size)
    js_bins = _positive_int("js_bins", js_bins)
    task = task_of(archive)
    if task.spec.genome != "policy":
        raise ConfigError(
            f"generators make policies; the archive's task {task.spec.name!r} has "
            f"{task.spec.genome} genomes"
        )
    if rollouts is None:
        rollouts = default_rollouts(archive.config, task)
    rollouts = _positive_int("rollouts", rollouts)
    check = getattr(generator_or_sample_fn, "check_task", None)
    if callable(check):
        check(task)
    sample_fn = as_sample_fn(
        generator_or_sample_fn, sampler=sampler, steps=steps, guidance=guidance
    )
    original = archive.archive
    low, high = np.asarray(original.low), np.asarray(original.high)

    # Requests: the test cells first (aligned with the originals' reset keys), then the rest.
    test_cells = select_test_cells(original, test_regions, test_set_seed)
    cells = original.elite_indices()
    rest = np.setdiff1d(cells, test_cells, assume_unique=True)
    requests = np.concatenate([test_cells, rest])
    n_test, n_requests = test_cells.shape[0], requests.shape[0]
    stored = np.asarray(original.descriptors)
    measures = np.clip(stored[requests], low, high).astype(np.float32)
    chunk = min(batch_size, n_requests)
    sample_key, eval_key = jax.random.split(key)

    # Originals of the test set, re-evaluated the same way (row i shares its reset keys with
    # request i: both are cut into chunks of the same size from row 0).
    originals = reevaluate(archive, test_cells, batch_size=chunk, rollouts=rollouts, key=eval_key)
    original_fitness = originals.episode_fitness  # [n_test, R]
    original_descriptors = originals.episode_descriptors  # [n_test, R, k]

    def generate(fn: SampleFn) -> tuple[np.ndarray, np.ndarray]:
        """``[n_requests, R]`` returns and ``[n_requests, R, k]`` descriptors of the policies
        ``fn`` makes for every occupied cell's measures."""

        def generated(i: int, rows: np.ndarray) -> Any:
            policies = fn(jax.random.fold_in(sample_key, i), jnp.asarray(measures[rows]))
            _check_population(policies, chunk, task)
            return policies

        return evaluate_in_chunks(
            task, generated, n_requests, eval_key, batch_size=chunk, rollouts=rollouts
        )

    generated_fitness, generated_descriptors = generate(sample_fn)
    errors = np.linalg.norm(generated_descriptors - measures[:, None, :], axis=-1)  # [n, R]
    test_fitness = generated_fitness[:n_test]
    k = measures.shape[1]
    reconstructed = _reconstructed_archive(
        original, generated_fitness.mean(axis=1), generated_descriptors.mean(axis=1)
    )
    before = {key_: float(v) for key_, v in original.metrics().items()}
    after = {key_: float(v) for key_, v in reconstructed.metrics().items()}
    archive_parameters = policy_parameter_count(original) * int(before["num_elites"])
    is_generator = callable(getattr(generator_or_sample_fn, "sample", None))
    if generator_parameters is None and is_generator:
        generator_parameters = generator_parameter_count(generator_or_sample_fn)

    def ratio(a: float, b: float) -> float | None:
        return a / b if b != 0 and math.isfinite(a) and math.isfinite(b) else None

    def figures(fitness: np.ndarray, descriptors: np.ndarray, coverage: float) -> dict[str, Any]:
        """Reward ratio, coverage ratio and JS divergence of the policies a sampler made
        (``[n_requests, R]`` returns and ``[n_requests, R, k]`` descriptors, ``coverage`` of
        the archive they rebuild) against the originals: the generator's figures, and the
        ceiling's."""
        return {
            "reward_ratio": ratio(float(fitness[:n_test].mean()), float(original_fitness.mean())),
            "coverage_ratio": ratio(coverage, before["coverage"]),
            "js_divergence": js_divergence(
                descriptors[:n_test].reshape(-1, k),
                original_descriptors.reshape(-1, k),
                low,
                high,
                js_bins,
            ),
        }

    generated = figures(generated_fitness, generated_descriptors, after["coverage"])
    metrics: dict[str, Any] = {
        "reward_ratio": generated["reward_ratio"],
        "js_divergence": generated["js_divergence"],
        "test_mem": float(errors[:n_test].mean()),
        "mem": float(errors.mean()),
        "generated_return": float(test_fitness.mean()),
        "original_return": float(original_fitness.mean()),
        "offset_reward_ratio": ratio(
            float(test_fitness.mean()) - original.qd_offset,
            float(original_fitness.mean()) - original.qd_offset,
        ),
    }
    for name, values in (("original", before), ("reconstructed", after)):
        for field in ("qd_score", "coverage", "num_elites", "max_fitness", "mean_fitness"):
            metrics[f"{name}_{field}"] = finite_or_none(values[field])
    metrics["qd_score_ratio"] = ratio(after["qd_score"], before["qd_score"])
    metrics["coverage_ratio"] = generated["coverage_ratio"]
    if ceiling_noise is not None:
        fitness, descriptors = generate(archive_sample_fn(original, ceiling_noise))
        rebuilt = _reconstructed_archive(original, fitness.mean(axis=1), descriptors.mean(axis=1))
        ceiling = figures(fitness, descriptors, float(rebuilt.metrics()["coverage"]))
        metrics.update({f"ceiling_{name}": value for name, value in ceiling.items()})
    metrics["archive_parameters"] = archive_parameters
    metrics["generator_parameters"] = generator_parameters
    metrics["compression_ratio"] = (
        None if generator_parameters is None else ratio(generator_parameters, archive_parameters)
    )
    metrics["compression_factor"] = (
        None if generator_parameters is None else ratio(archive_parameters, generator_parameters)
    )
    metrics["evaluation"] = {
        "sampler": sampler if is_generator else "callable",
        "steps": steps if is_generator else None,
        "guidance": float(guidance) if is_generator else None,
        "rollouts": rollouts,
        "test_regions": int(test_regions),
        "test_set_size": int(n_test),
        "test_set_seed": int(test_set_seed),
        "js_bins": js_bins,
        "reconstruction_requests": int(n_requests),
        "reset": task.spec.reset,
    }
    if ceiling_noise is not None:
        metrics["evaluation"]["ceiling_noise"] = float(ceiling_noise)
    images: dict[str, str] = {}
    if out_dir is not None:
        images = _write_images(
            archive, reconstructed, Path(out_dir), task.spec.name, sampler, steps
        )
    metrics["images"] = images
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    return metrics


# -------------------------------------------------------------------------- images


def plot_returns_cdf(
    original: Float[ArrayLike, " n"],
    reconstructed: Float[ArrayLike, " m"],
    num_cells: int,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Archive CDF plot: percentage of cells whose elite's return is at least ``x``.

    Args:
        original: ``[n]`` returns of the original archive's elites.
        reconstructed: ``[m]`` returns of the reconstructed archive's elites.
        num_cells: cells of the tessellation (the 100% line).
        path: PNG file to write.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, values, style in (
        ("original", original, "-"),
        ("reconstructed", reconstructed, "--"),
    ):
        values = np.sort(np.asarray(values, np.float64))[::-1]
        share = 100.0 * np.arange(1, values.size + 1) / num_cells
        ax.step(values, share, style, where="post", label=f"{label} ({values.size} elites)")
    ax.set_xlabel("return")
    ax.set_ylabel("cells with return >= x (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _write_images(
    artifact: ArchiveArtifact,
    reconstructed: Archive,
    out_dir: Path,
    task_name: str,
    sampler: str,
    steps: int | None,
) -> dict[str, str]:
    from zoo.plot import plot_archive

    out_dir.mkdir(parents=True, exist_ok=True)
    original = artifact.archive
    fitness_of = lambda a: np.asarray(a.fitness)[np.asarray(a.occupied)]  # noqa: E731
    setting = f"{sampler}" + (f"-{steps}" if steps else "")
    paths = {
        "returns_cdf": plot_returns_cdf(
            fitness_of(original),
            fitness_of(reconstructed),
            original.num_cells,
            out_dir / IMAGE_NAMES["returns_cdf"],
            title=f"{task_name}: archive CDF, original vs reconstructed ({setting})",
        ),
        "heatmap_original": plot_archive(artifact, out_dir / IMAGE_NAMES["heatmap_original"]),
        "heatmap_reconstructed": plot_archive(
            ArchiveArtifact(reconstructed, artifact.config),
            out_dir / IMAGE_NAMES["heatmap_reconstructed"],
        ),
    }
    return {name: str(path) for name, path in paths.items()}


# ---------------------------------------------------------------- report, record

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("reward_ratio", "reward ratio", ".4f"),
    ("js_divergence", "JS divergence (nats)", ".4f"),
    ("mem", "MEM (all cells)", ".4f"),
    ("test_mem", "MEM (test set)", ".4f"),
    ("offset_reward_ratio", "reward ratio above offset", ".4f"),
    ("generated_return", "generated return (test)", ".2f"),
    ("original_return", "original return (test)", ".2f"),
    ("qd_score_ratio", "QD score ratio", ".4f"),
    ("coverage_ratio", "coverage ratio", ".4f"),
    ("ceiling_reward_ratio", "ceiling: reward ratio", ".4f"),
    ("ceiling_coverage_ratio", "ceiling: coverage ratio", ".4f"),
    ("ceiling_js_divergence", "ceiling: JS divergence", ".4f"),
    ("compression_ratio", "compression ratio", ".4f"),
    ("compression_factor", "compression factor (x:1)", ".1f"),
)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of the metrics of :func:`evaluate_generator`."""

    def show(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"{'metric':<28} {'value':>14}"]
    for name, label, fmt in _ROWS:
        if name in metrics:
            lines.append(f"{label:<28} {show(metrics[name], fmt):>14}")
    lines.append(f"{'':<28} {'original':>14} {'reconstructed':>14}")
    for field, label, fmt in (
        ("qd_score", "QD score", ".6g"),
        ("coverage", "coverage", ".4f"),
        ("num_elites", "elites", ".0f"),
        ("max_fitness", "max fitness", ".6g"),
        ("mean_fitness", "mean fitness", ".6g"),
    ):
        a, b = metrics.get(f"original_{field}"), metrics.get(f"reconstructed_{field}")
        lines.append(f"{label:<28} {show(a, fmt):>14} {show(b, fmt):>14}")
    settings = metrics.get("evaluation", {})
    if settings:
        lines.append(
            "settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
        )
    return "\n".join(lines)


def record_in_generator(
    generator: Any, metrics: dict[str, Any], images: dict[str, str] | None = None
) -> None:
    """Store evaluation results in ``generator.config`` so its card shows them.

    Numbers go to ``config["metrics"]`` (non-finite ones as ``None``), the settings of the
    evaluation to ``config["evaluation"]`` and image file *names* (relative to the
    generator directory) to ``config["images"]`` as ``{name: file}``. Save the generator
    (``save_pretrained``) to write them, with the image files copied into its directory.
    """
    config = getattr(generator, "config", None)
    if not isinstance(config, dict):
        raise ConfigError(
            f"expected a generator with a config dict, given {type(generator).__name__}"
        )
    numbers = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or name in ("images", "evaluation"):
            continue
        if value is None or isinstance(value, int | float | np.number):
            numbers[name] = None if value is None else finite_or_none(value)
    config.setdefault("metrics", {})
    config["metrics"].update(numbers)
    if "evaluation" in metrics:
        config["evaluation"] = dict(metrics["evaluation"])
    images = metrics.get("images", {}) if images is None else images
    if images:
        config["images"] = {name: Path(path).name for name, path in images.items()}
