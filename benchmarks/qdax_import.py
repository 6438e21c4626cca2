"""A real QDax 0.5 MAP-Elites repertoire imported into qdzoo, saved, loaded and re-evaluated.

Run it with the QDax environment (``benchmarks/setup_qdax_env.sh``)::

    JAX_PLATFORMS=cpu .venv-qdax/bin/python benchmarks/qdax_import.py

1. QDax trains a small MAP-Elites repertoire on ``walker2d_uni`` (Brax spring backend): flax
   ``MLP`` policies (tanh hidden layers, tanh output), Iso+LineDD variation, a CVT of
   ``--cells`` centroids in ``[0, 1]^2``. Every episode starts from the state
   ``env.reset(jax.random.key(0))``, which is qdzoo's deterministic reset. (QDax 0.5's point
   maze is a Brax v1 environment, which Brax 0.14 no longer ships, so the smallest task whose
   dynamics both libraries have is walker2d.)
2. ``zoo.from_qdax`` imports the repertoire (in memory) for qdzoo's ``walker2d-uni`` with the
   same episode length and policy, the artifact is saved to ``--out`` and loaded back.
3. ``zoo.evaluation.reevaluate`` rolls every elite out again with qdzoo and the script prints
   the stored (QDax) against the re-evaluated (qdzoo) fitness and descriptors, the QD scores,
   and the flax MLP's actions against the converted policy's.

Fitness is the same sum of rewards over the steps up to termination in both libraries.
QDax's ``walker2d_uni`` descriptor averages each foot's contact over the states *before*
each step (the reset state included, the last state not); qdzoo's over the states *after*
each step. ``--descriptor after-step`` gives QDax qdzoo's rule (the contacts of
``next_state_desc``, on an env without QDax's auto-reset wrapper, which would replace the
contacts after the last step by those of the reset state), so the descriptors agree too; the
default keeps QDax's rule and shows the difference (at most one step's contact per foot:
1 / valid steps).

qdzoo's own dependencies that the QDax environment lacks (equinox, jaxtyping, safetensors,
diffrax) are not installed into it: the script reports them and takes them from qdzoo's
virtualenv (``--qdzoo-site-packages``, default ``.venv`` of this repository), appended at
the end of ``sys.path`` so that QDax's own jax, flax and brax come first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QDZOO_DEPENDENCIES = ("equinox", "jaxtyping", "safetensors", "diffrax", "huggingface_hub")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=10, help="MAP-Elites updates")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--episode-length", type=int, default=50)
    p.add_argument("--cells", type=int, default=64, help="CVT centroids")
    p.add_argument("--hidden", type=int, nargs="+", default=[16, 16], help="MLP hidden sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--descriptor", choices=["qdax", "after-step"], default="qdax")
    p.add_argument("--out", type=Path, default=None, help="artifact dir (default: a temp dir)")
    venv = REPO / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    p.add_argument("--qdzoo-site-packages", type=Path, default=venv / "site-packages")
    return p.parse_args(argv)


def make_qdzoo_importable(site_packages: Path) -> list[str]:
    """Put the repository first on ``sys.path`` and qdzoo's virtualenv last; return the
    qdzoo dependencies this interpreter lacks on its own."""
    sys.path.insert(0, str(REPO))
    missing = [m for m in QDZOO_DEPENDENCIES if importlib.util.find_spec(m) is None]
    if missing:
        if not site_packages.is_dir():
            sys.exit(
                f"qdzoo needs {missing}, which {sys.executable} lacks, and "
                f"{site_packages} does not exist; pass --qdzoo-site-packages"
            )
        sys.path.append(str(site_packages))
    return missing


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    missing = make_qdzoo_importable(args.qdzoo_site_packages)

    with contextlib.redirect_stdout(sys.stderr):  # mujoco prints "Failed to import warp"
        import jax
        import jax.numpy as jnp
        import numpy as np
        import qdax.tasks.brax.v2 as environments
        from qdax.core.containers.mapelites_repertoire import compute_cvt_centroids
        from qdax.core.emitters.mutation_operators import isoline_variation
        from qdax.core.emitters.standard_emitters import MixingEmitter
        from qdax.core.map_elites import MAPElites
        from qdax.core.neuroevolution.networks.networks import MLP
        from qdax.tasks.brax.v2.env_creators import create_brax_scoring_fn
        from qdax.utils.metrics import default_qd_metrics

        import zoo
        from models.policy import PolicySpec
        from zoo.cvt import nearest_centroid
        from zoo.evaluation import reevaluate

    from importlib.metadata import version

    print(
        f"qdax {version('qdax')}, brax {version('brax')}, jax {jax.__version__} on "
        f"{jax.default_backend()}; qdzoo from {REPO}"
    )
    print(
        f"qdzoo dependencies missing from {sys.prefix}: {missing or 'none'}"
        + (f" (taken from {args.qdzoo_site_packages})" if missing else "")
    )

    # ------------------------------------------------------------------ QDax training
    t0 = time.perf_counter()
    length = args.episode_length
    # QDax's auto-reset wrapper overwrites the contacts after the last step with the reset
    # state's, which would turn the after-step rule back into QDax's: leave it out there.
    env = environments.create(
        "walker2d_uni",
        episode_length=length,
        backend="spring",
        auto_reset=args.descriptor == "qdax",
    )
    network = MLP(
        layer_sizes=(*args.hidden, env.action_size),
        activation=jnp.tanh,
        kernel_init=jax.nn.initializers.lecun_uniform(),
        final_activation=jnp.tanh,
    )
    key = jax.random.key(args.seed)
    key, init_key, cvt_key, me_key = jax.random.split(key, 4)
    fake = jnp.zeros((args.batch_size, env.observation_size))
    params = jax.vmap(network.init)(jax.random.split(init_key, args.batch_size), fake)

    if args.descriptor == "qdax":
        extract = environments.descriptor_extractor["walker2d_uni"]
    else:

        def extract(data, mask):  # feet contact after each step, qdzoo's rule
            valid = 1.0 - mask[..., None]
            return jnp.sum(data.next_state_desc * valid, axis=1) / jnp.sum(valid, axis=1)

    def reset(_):  # qdzoo's deterministic reset: one fixed start for every episode
        return env.reset(jax.random.key(0))

    scoring = create_brax_scoring_fn(
        env,
        network,
        extract,
        jax.random.key(0),
        episode_length=length,
        deterministic=False,
        play_reset_fn=reset,
    )
    qd_offset = environments.reward_offset["walker2d_uni"] * length
    emitter = MixingEmitter(
        mutation_fn=None,
        variation_fn=functools.partial(isoline_variation, iso_sigma=0.005, line_sigma=0.05),
        variation_percentage=1.0,
        batch_size=args.batch_size,
    )
    map_elites = MAPElites(
        scoring_function=scoring,
        emitter=emitter,
        metrics_function=functools.partial(default_qd_metrics, qd_offset=qd_offset),
    )
    centroids = compute_cvt_centroids(
        num_descriptors=env.descriptor_length,
        num_init_cvt_samples=5_000,
        num_centroids=args.cells,
        minval=0.0,
        maxval=1.0,
        key=cvt_key,
    )
    repertoire, emitter_state, metrics = map_elites.init(params, centroids, me_key)
    # Not jitted as a whole: the update then reuses the scoring function compiled by init
    # (one Brax compile instead of two); the rest of the update is cheap array code.
    update = map_elites.update
    for _ in range(args.iterations):
        me_key, step_key = jax.random.split(me_key)
        repertoire, emitter_state, metrics = update(repertoire, emitter_state, step_key)
    jax.block_until_ready(repertoire)
    train_s = time.perf_counter() - t0
    print(
        f"QDax MAP-Elites: walker2d_uni, {length} steps, batch {args.batch_size}, "
        f"{args.iterations} iterations, {args.cells} CVT cells, MLP {tuple(args.hidden)} tanh: "
        f"{train_s:.1f}s; qd_score {float(metrics['qd_score']):.2f}, coverage "
        f"{float(metrics['coverage']):.1f}%, max fitness {float(metrics['max_fitness']):.3f}"
    )

    # ------------------------------------------------------------------ import, save, load
    t0 = time.perf_counter()
    task = zoo.tasks.make(
        "walker2d-uni",
        episode_length=length,
        backend="spring",
        reset="deterministic",
        policy_hidden_sizes=list(args.hidden),
    )
    policy = PolicySpec(env.observation_size, env.action_size, tuple(args.hidden), "tanh", "tanh")
    artifact = zoo.from_qdax(repertoire, task=task, policy=policy, name="qdax_import.py")
    out = args.out or Path(tempfile.mkdtemp(prefix="qdax-import-"))
    artifact.save_pretrained(out, plot=False)
    loaded = zoo.load_archive(out)
    import_s = time.perf_counter() - t0
    occupied = np.isfinite(np.asarray(repertoire.fitnesses).reshape(-1))
    same = np.array_equal(loaded.cells, np.flatnonzero(occupied))
    print(
        f"imported {len(loaded.cells)} elites ({loaded.config['source']['library']} "
        f"{loaded.config['source']['version']} {loaded.config['source']['archive']}), saved to "
        f"{out} and loaded back in {import_s:.1f}s; same cells as the repertoire: {same}"
    )
    print(
        f"QD score: QDax {float(metrics['qd_score']):.3f}, qdzoo artifact "
        f"{loaded.metrics()['qd_score']:.3f}"
    )

    # The converted policies act as the flax MLPs on a batch of observations.
    obs = jax.random.normal(jax.random.key(1), (8, env.observation_size))
    worst = 0.0
    for cell in loaded.cells[:16]:
        flax_params = jax.tree.map(lambda x, c=cell: x[c], repertoire.genotypes)
        ours = jax.tree.map(lambda x, c=cell: x[c], loaded.archive.genomes)
        diff = jnp.abs(network.apply(flax_params, obs) - jax.vmap(ours)(obs)).max()
        worst = max(worst, float(diff))
    print(f"actions, flax MLP vs imported MLPPolicy (16 elites x 8 obs): max |diff| {worst:.2e}")

    # ------------------------------------------------------------------ re-evaluation
    t0 = time.perf_counter()
    result = reevaluate(loaded, batch_size=args.batch_size)
    eval_s = time.perf_counter() - t0
    f_diff = np.abs(result.fitness - result.stored_fitness)
    d_diff = np.abs(result.descriptors - result.stored_descriptors)
    cells_again = np.asarray(
        nearest_centroid(jnp.asarray(result.descriptors), loaded.archive.centroids)
    )
    close = f_diff <= 1e-3 * np.maximum(1.0, np.abs(result.stored_fitness))
    print(f"re-evaluated {len(result.cells)} elites with qdzoo in {eval_s:.1f}s")
    print(
        f"fitness     stored vs re-evaluated: max |diff| {f_diff.max():.3e}, mean "
        f"{f_diff.mean():.3e} (fitness range {result.stored_fitness.min():.2f} .. "
        f"{result.stored_fitness.max():.2f}); "
        f"within 1e-3 relative: {np.mean(close):.0%}"
    )
    print(
        f"descriptors stored vs re-evaluated ({args.descriptor} rule in QDax): max |diff| "
        f"{d_diff.max():.3e}, mean {d_diff.mean():.3e}; re-evaluated elites in their own cell: "
        f"{np.mean(cells_again == result.cells):.0%}"
    )
    print(f"total wall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
