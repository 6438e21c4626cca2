"""Videos and filmstrips of policies, offline and headless.

::

    import jax, zoo
    from zoo.video import select_tour_cells, write_rollout_video

    archive = zoo.load_archive("walker2d-uni-map-elites")
    task = archive.make_task()
    cells = select_tour_cells(archive, 4)             # spread over the archive + the best
    info = write_rollout_video(task, archive.genomes(cells), jax.random.key(0), "tour.gif")
    print(info.renderer, info.frames, info.tiles)

The policies of a population are rolled out together (the episodes :meth:`evaluate` runs
for that population and key) and shown side by side, one tile each, with a label. Frames:

- Brax tasks: MuJoCo's OpenGL renderer with a side camera following the torso
  (:mod:`zoo.render_mujoco`, headless through EGL or OSMesa), or, where no OpenGL platform
  works, a matplotlib side view (:mod:`zoo.render_fallback`). The frames are played in
  real time: one frame every ``round(1 / (fps * env.dt))`` steps.
- The point maze: a matplotlib top view of the maze and the point's path, one frame a step.

The file's suffix chooses the format: ``.gif`` (Pillow), ``.mp4`` (H.264 through the ffmpeg
binary of ``imageio-ffmpeg``) or ``.png`` (a filmstrip: a row of frames per tile). Every
file is written atomically.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from hub_cards import TOUR_NAME
from zoo.errors import ConfigError, MissingDependencyError, ShapeError
from zoo.serialization import atomic_path
from zoo.tasks.base import Task

__all__ = [
    "FORMATS",
    "RENDERERS",
    "TOUR_NAME",
    "VideoInfo",
    "can_render_video",
    "select_tour_cells",
    "write_card_gif",
    "write_rollout_video",
]

FORMATS = (".gif", ".mp4", ".png")
"""The file suffixes :func:`write_rollout_video` writes."""

RENDERERS = ("auto", "mujoco", "matplotlib")
"""``renderer=`` values: ``auto`` tries MuJoCo's OpenGL renderer, then matplotlib."""


FILMSTRIP_FRAMES = 6
"""Frames per tile in a ``.png`` filmstrip."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What :func:`write_rollout_video` wrote.

    Attributes:
        path: the file written.
        renderer: how the frames were drawn: ``"mujoco (egl)"``, ``"mujoco (osmesa)"``...
            (MuJoCo's OpenGL renderer on that platform) or ``"matplotlib"``.
        frames: frames per tile (in a ``.png`` filmstrip: the frames shown per tile).
        tiles: policies shown side by side.
    """

    path: Path
    renderer: str
    frames: int
    tiles: int


# ---------------------------------------------------------------------------------------
# What can be rendered
# ---------------------------------------------------------------------------------------


def _is_brax(task: Task) -> bool:
    return hasattr(task, "env") and hasattr(getattr(task, "env", None), "sys")


def _is_point_maze(task: Task) -> bool:
    from zoo.tasks.point_maze import PointMazeTask

    return isinstance(task, PointMazeTask)


def can_render_video(task: Task) -> bool:
    """Whether :func:`write_rollout_video` can show ``task`` (Brax tasks, the point maze)."""
    return _is_brax(task) or _is_point_maze(task)


def _check_task(task: Task) -> None:
    if not can_render_video(task):
        name = getattr(getattr(task, "spec", None), "name", type(task).__name__)
        raise ConfigError(
            f"videos show episodic tasks with a scene (the Brax locomotion tasks, "
            f"point-maze); the task {name!r} has none. Render a policy of one of those "
            "tasks instead"
        )


def _check_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"unknown video format {path.suffix or '(no suffix)'!r} for {path}; expected a "
            f"file name ending in one of {', '.join(FORMATS)} (the suffix chooses the format)"
        )
    if suffix == ".mp4":
        _ffmpeg()
    return suffix


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise MissingDependencyError(
            "writing .mp4 videos needs the imageio-ffmpeg package (it ships an ffmpeg binary), "
            "which is not installed; install it with `pip install imageio-ffmpeg`, or write "
            "a .gif or .png instead"
        ) from error
    return imageio_ffmpeg


def _check_int(name: str, value: Any, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low} ({what}), given {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------


def _as_population(genomes: Any) -> Any:
    """Add a leading axis to a single ``MLPPolicy`` (weights ``[out, in]``)."""
    from models.policy import MLPPolicy

    if isinstance(genomes, MLPPolicy) and genomes.weights and genomes.weights[0].ndim == 2:
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], genomes)
    return genomes


@eqx.filter_jit
def _rollout(
    task: Any, genomes: Any, key: PRNGKeyArray, steps: int, brax: bool
) -> tuple[Any, Any, Any, Any]:
    from zoo.tasks.episodes import run_episodes
    from zoo.tasks.protocol import batched_policy, population_size

    state = task.reset(key, population_size(genomes))
    policies = batched_policy(genomes)

    def record(s: Any) -> Any:
        return s.pipeline_state.q if brax else s

    result = run_episodes(
        task, lambda observations, t: policies(observations), state, steps, record=record
    )
    return record(state), result.records, result.valid_steps, result.returns


def _stride(task: Task, fps: int) -> int:
    """Steps between two frames: real-time playback for Brax tasks, every step otherwise."""
    if not _is_brax(task):
        return 1
    dt = float(task.env.dt)  # type: ignore[attr-defined]
    return max(1, round(1.0 / (fps * dt)))


def _trajectories(
    task: Task, genomes: Any, key: PRNGKeyArray, stride: int, max_frames: int | None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per tile the recorded states of its frames (``[T_i, ...]``, initial state first),
    the valid steps ``[B]`` and returns ``[B]`` of the rolled-out steps."""
    from zoo.tasks.protocol import check_policy_population

    check_policy_population(genomes, task.spec)
    steps = int(task.spec.episode_length)
    if max_frames is not None:
        steps = min(steps, (max_frames - 1) * stride)
    if steps >= 1:
        first, records, valid, returns = _rollout(task, genomes, key, steps, _is_brax(task))
        first, records = np.asarray(first), np.asarray(records)
        valid, returns = np.asarray(valid), np.asarray(returns)
    else:  # max_frames=1: the initial state only
        first = np.asarray(_rollout(task, genomes, key, 1, _is_brax(task))[0])
        records = np.zeros((first.shape[0], 0, *first.shape[1:]), first.dtype)
        valid = np.zeros(first.shape[0], np.int64)
        returns = np.zeros(first.shape[0], np.float32)
    paths = []
    for b in range(first.shape[0]):
        path = np.concatenate([first[b : b + 1], records[b, : int(valid[b])]])
        shown = path[::stride]
        if (len(path) - 1) % stride:  # always end on the last state
            shown = np.concatenate([shown, path[-1:]])
        if max_frames is not None:
            shown = shown[:max_frames]
        paths.append(shown)
    return paths, valid, returns


def _frames(
    task: Task, paths: list[np.ndarray], width: int, height: int, renderer: str
) -> tuple[list[np.ndarray], str]:
    """Per tile ``[T_i, height, width, 3]`` frames, and the renderer used."""
    from zoo import render_fallback

    if _is_point_maze(task):
        if renderer == "mujoco":
            raise ConfigError(
                "renderer='mujoco' draws Brax scenes; the point maze has none (it is drawn "
                "with matplotlib): pass renderer='auto' or 'matplotlib'"
            )
        from zoo.tasks import point_maze

        frames = [
            render_fallback.draw_point_maze(
                p,
                width,
                height,
                walls=point_maze.WALLS,
                arena=point_maze.ARENA,
                goal=point_maze.GOAL,
                goal_half_width=point_maze.GOAL_HALF_WIDTH,
            )
            for p in paths
        ]
        return frames, "matplotlib"
    model = task.env.sys.mj_model  # type: ignore[attr-defined]
    if renderer in ("auto", "mujoco"):
        from zoo.render_mujoco import GLUnavailableError, render_qpos

        try:
            frames, gl = render_qpos(model, paths, width, height)
            return frames, f"mujoco ({gl})"
        except GLUnavailableError as error:
            if renderer == "mujoco":
                raise ConfigError(f"renderer='mujoco' cannot render here: {error}") from error
    return [render_fallback.draw_robot(model, p, width, height) for p in paths], "matplotlib"


# ---------------------------------------------------------------------------------------
# Composition: labels, grids, filmstrips
# ---------------------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` in a dark box at its top-left corner."""
    if not text:
        return frame
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame).convert("RGBA")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = _font(max(9, frame.shape[0] // 20))
    left, top, right, bottom = draw.multiline_textbbox((4, 3), text, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0, 150))
    draw.multiline_text((4, 3), text, font=font, fill=(255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(image, overlay).convert("RGB"))


def _labelled(frames: list[np.ndarray], labels: Sequence[str]) -> list[np.ndarray]:
    """Every frame of every tile with its tile's label."""
    out = []
    for tile, text in zip(frames, labels, strict=True):
        out.append(np.stack([_label(f, text) for f in tile]))
    return out


def _grid_shape(tiles: int) -> tuple[int, int]:
    """``(rows, columns)``: one row up to 4 tiles, then a near-square grid."""
    columns = tiles if tiles <= 4 else math.ceil(math.sqrt(tiles))
    return math.ceil(tiles / columns), columns


def _compose(frames: list[np.ndarray]) -> np.ndarray:
    """``[T, rows * H, columns * W, 3]``: the tiles in a grid; a tile whose episode ended
    early holds its last frame, dimmed."""
    count = max(len(f) for f in frames)
    height, width = frames[0].shape[1:3]
    rows, columns = _grid_shape(len(frames))
    video = np.full((count, rows * height, columns * width, 3), 255, np.uint8)
    for i, tile in enumerate(frames):
        r, c = divmod(i, columns)
        block = video[:, r * height : (r + 1) * height, c * width : (c + 1) * width]
        block[: len(tile)] = tile
        if len(tile) < count:
            block[len(tile) :] = (tile[-1].astype(np.float32) * 0.6).astype(np.uint8)
    return video


def _filmstrip(frames: list[np.ndarray], count: int) -> np.ndarray:
    """``[tiles * H, count * W, 3]``: per tile a row of ``count`` frames evenly spaced
    over its episode (first and last included)."""
    height, width = frames[0].shape[1:3]
    count = min(count, max(len(f) for f in frames))
    strip = np.full((len(frames) * height, count * width, 3), 255, np.uint8)
    for i, tile in enumerate(frames):
        picks = np.unique(np.linspace(0, len(tile) - 1, count).round().astype(int))
        for j, k in enumerate(picks):
            strip[i * height : (i + 1) * height, j * width : (j + 1) * width] = tile[k]
    return strip


# ---------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------


def _write_gif(video: np.ndarray, path: Path, fps: int) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in video]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
    )


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


def _write_mp4(video: np.ndarray, path: Path, fps: int) -> None:
    imageio_ffmpeg = _ffmpeg()
    height, width = video.shape[1:3]
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))  # yuv420p wants even sizes
    if any(p[1] for p in pad):
        video = np.pad(video, pad, mode="edge")
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (video.shape[2], video.shape[1]),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-movflags", "+faststart"],
    )
    from zoo.render_mujoco import quiet_fork

    with quiet_fork():
        writer.send(None)  # starts ffmpeg
    try:
        for frame in video:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def write_rollout_video(
    task: Task,
    genomes: Any,
    key: PRNGKeyArray,
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    fps: int = 30,
    width: int = 320,
    height: int = 240,
    renderer: str = "auto",
    max_frames: int | None = None,
) -> VideoInfo:
    """Roll out a population on ``task`` and write a video of it, one tile per policy.

    Args:
        task: a Brax locomotion task or the point maze (:func:`can_render_video`).
        genomes: a population of policies (leading axis: the tiles); a single
            :class:`models.MLPPolicy` without that axis is one tile.
        key: the reset key (the episodes are those ``task.evaluate(genomes, key)`` runs).
        path: the file to write; its suffix chooses the format: ``.gif``, ``.mp4`` or
            ``.png`` (a filmstrip: a row of frames per policy). Its folder is created.
        labels: one caption per tile; default ``"return R"`` of the rolled-out steps.
        fps: frames per second of the video; Brax episodes play in real time (a frame every
            ``round(1 / (fps * env.dt))`` steps).
        width, height: pixels of each tile.
        renderer: ``"auto"`` (MuJoCo's OpenGL renderer when a platform works here, else
            matplotlib), ``"mujoco"`` (fail when it cannot render) or ``"matplotlib"``.
        max_frames: at most this many frames per tile (the episode is cut short).

    Returns:
        A :class:`VideoInfo`: the path, the renderer used, frames per tile and tiles.

    Raises:
        ConfigError: an unknown suffix or renderer, a task without a scene, a bad size,
            ``fps`` or ``max_frames``, or ``renderer="mujoco"`` where OpenGL does not work.
        MissingDependencyError: ``.mp4`` without the ``imageio-ffmpeg`` package.
        ShapeError: ``labels`` of another length than the population.
        TaskMismatchError: policies that do not fit the task.
    """
    path = Path(path)
    suffix = _check_format(path)
    _check_task(task)
    if renderer not in RENDERERS:
        raise ConfigError(
            f"renderer must be one of {', '.join(RENDERERS)}, given {renderer!r}; 'auto' uses "
            "MuJoCo's OpenGL renderer where it works and matplotlib elsewhere"
        )
    fps = _check_int("fps", fps, 1, "frames per second")
    width = _check_int("width", width, 16, "pixels per tile")
    height = _check_int("height", height, 16, "pixels per tile")
    if max_frames is not None:
        max_frames = _check_int("max_frames", max_frames, 1, "frames per tile")
    genomes = _as_population(genomes)
    from zoo.tasks.protocol import population_size

    tiles = population_size(genomes)
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(labels) != tiles:
            raise ShapeError(
                f"labels must give one caption per policy: {tiles} policies, "
                f"{len(labels)} labels given"
            )
    paths, _, returns = _trajectories(task, genomes, key, _stride(task, fps), max_frames)
    frames, used = _frames(task, paths, width, height, renderer)
    if labels is None:
        labels = [f"return {r:.1f}" for r in returns]
    frames = _labelled(frames, labels)
    with atomic_path(path) as tmp:
        if suffix == ".png":
            strip = _filmstrip(frames, FILMSTRIP_FRAMES)
            _write_png(strip, tmp)
            count = strip.shape[1] // width
        else:
            video = _compose(frames)
            count = len(video)
            (_write_gif if suffix == ".gif" else _write_mp4)(video, tmp, fps)
    return VideoInfo(path=path, renderer=used, frames=count, tiles=tiles)


# ---------------------------------------------------------------------------------------
# Archive tours and model-card GIFs
# ---------------------------------------------------------------------------------------


def select_tour_cells(archive: Any, count: int) -> np.ndarray:
    """Cell indices of ``count`` elites to show: the best one, then elites spread over the
    occupied region of the descriptor space.

    Greedy farthest-point selection in the descriptor space scaled to the occupied
    region's bounding box, starting from the best elite; deterministic.

    Args:
        archive: an :class:`zoo.archive_artifact.ArchiveArtifact` or a
            :class:`zoo.archive.Archive`.
        count: elites wanted (all of them when the archive holds fewer).

    Returns:
        ``[min(count, elites)]`` int64 cell indices, the best elite first (give them to
        ``archive.genomes(cells)``).

    Raises:
        ConfigError: ``count`` below 1 or an archive without elites.
    """
    count = _check_int("count", count, 1, "elites to show")
    store = getattr(archive, "archive", archive)
    cells = np.asarray(store.elite_indices(), np.int64)
    if cells.size == 0:
        raise ConfigError(
            "the archive holds no elite to show; train it first or load a trained one"
        )
    fitness = np.asarray(store.fitness)[cells]
    descriptors = np.asarray(store.descriptors, np.float64)[cells]
    low, high = descriptors.min(axis=0), descriptors.max(axis=0)
    scaled = (descriptors - low) / np.where(high > low, high - low, 1.0)
    chosen = [int(np.argmax(fitness))]
    distance = np.linalg.norm(scaled - scaled[chosen[0]], axis=1)
    while len(chosen) < min(count, cells.size):
        nxt = int(np.argmax(distance))
        if distance[nxt] <= 0.0:  # only duplicates of chosen descriptors are left
            rest = [i for i in np.argsort(-fitness, kind="stable") if i not in chosen]
            chosen += [int(i) for i in rest[: min(count, cells.size) - len(chosen)]]
            break
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(scaled - scaled[nxt], axis=1))
    return cells[chosen]


def _measures_text(names: Sequence[str], values: Sequence[float]) -> str:
    return " ".join(f"{n.replace('_contact', '').replace('_position', '')}={v:.2f}"
                    for n, v in zip(names, values, strict=True))  # fmt: skip


def write_card_gif(
    artifact: Any,
    path: str | Path,
    *,
    count: int = 4,
    seed: int = 0,
    fps: int = 30,
    width: int = 240,
    height: int = 180,
    max_frames: int | None = 90,
    renderer: str = "auto",
) -> VideoInfo | None:
    """Write the model card's GIF of ``artifact``: a few of its policies side by side.

    - An archive: :func:`select_tour_cells` (the best elite and elites spread over the
      archive), labelled with their measures and stored fitness.
    - A generator: one policy sampled for each of ``count`` measures spread over the
      descriptor bounds, labelled with the requested measures.

    Args:
        artifact: an :class:`zoo.archive_artifact.ArchiveArtifact` or a
            :class:`zoo.generator.Generator`.
        path: the GIF to write (e.g. ``artifact_dir / TOUR_NAME``).
        count: policies shown.
        seed: reset (and sampling) randomness.
        fps, width, height, max_frames, renderer: as for :func:`write_rollout_video`.

    Returns:
        The :class:`VideoInfo`, or ``None`` when the artifact's task has no scene to show
        (benchmark functions) or holds no policy.
    """
    count = _check_int("count", count, 1, "policies shown")
    task = artifact.make_task()
    if not can_render_video(task):
        return None
    key = jax.random.key(seed)
    if hasattr(artifact, "archive"):
        if artifact.config.get("policy") is None or artifact.archive.elite_indices().size == 0:
            return None
        cells = select_tour_cells(artifact, count)
        names = artifact.task_spec.descriptor_names
        descriptors = np.asarray(artifact.archive.descriptors)[cells]
        fitness = np.asarray(artifact.archive.fitness)[cells]
        labels = [
            f"{'best ' if i == 0 else ''}{_measures_text(names, d)}\nreturn {f:.1f}"
            for i, (d, f) in enumerate(zip(descriptors, fitness, strict=True))
        ]
        genomes = artifact.genomes(cells)
    else:
        low = np.asarray(artifact.descriptor_low, np.float64)
        high = np.asarray(artifact.descriptor_high, np.float64)
        fractions = _spread(count, low.size)
        measures = (low + fractions * (high - low)).astype(np.float32)
        sample_key, key = jax.random.split(key)
        genomes = artifact.sample(sample_key, measures, num_samples=1)
        names = artifact.config["descriptors"]["names"]
        labels = [f"asked {_measures_text(names, m)}" for m in measures]
    return write_rollout_video(
        task,
        genomes,
        key,
        path,
        labels=labels,
        fps=fps,
        width=width,
        height=height,
        renderer=renderer,
        max_frames=max_frames,
    )


def _spread(count: int, k: int) -> np.ndarray:
    """``[count, k]`` fractions in ``[0.15, 0.85]`` spread over the unit cube (a diagonal
    sweep for one measure; a low-discrepancy set otherwise)."""
    if count == 1:
        return np.full((1, k), 0.5)
    steps = np.linspace(0.15, 0.85, count)
    if k == 1:
        return steps[:, None]
    primes = np.array([2, 3, 5, 7, 11, 13, 17, 19, 23, 29])[: k - 1]
    columns = [steps]
    for p in primes:  # van der Corput in base p, then rescaled
        values = []
        for i in range(1, count + 1):
            f, r, n = 1.0, 0.0, i
            while n:
                f /= p
                r += f * (n % p)
                n //= p
            values.append(r)
        columns.append(0.15 + 0.7 * np.asarray(values))
    return np.stack(columns, axis=1)[:, :k]
