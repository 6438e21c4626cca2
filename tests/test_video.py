"""Offline videos: GIF / MP4 / PNG filmstrips of Brax and point-maze rollouts, the
matplotlib fallback, grids of policies, archive tours and the model-card GIF.

Episodes are 10 steps long and every Brax test shares one population of two policies, so
the rollout is compiled once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from PIL import Image

from zoo import tasks
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_spec
from zoo.errors import ConfigError, MissingDependencyError, ShapeError
from zoo.video import (
    FORMATS,
    TOUR_NAME,
    VideoInfo,
    can_render_video,
    select_tour_cells,
    write_card_gif,
    write_rollout_video,
)

WIDTH, HEIGHT = 64, 48
FPS = 125  # walker2d's dt is 0.008 s: one frame a step


def gif_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a GIF as ``[H, W, 3]`` uint8."""
    frames = []
    with Image.open(path) as image:
        for i in range(image.n_frames):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
    return frames


@pytest.fixture(scope="module")
def walker() -> Any:
    return tasks.make("walker2d-uni", episode_length=10)


@pytest.fixture(scope="module")
def walkers(walker: Any) -> Any:
    """Two random policies of the walker (tiles of every Brax video here)."""
    return walker.init_genomes(jax.random.key(3), 2)


def test_gif_auto_renderer_moves_and_is_a_grid(walker: Any, walkers: Any, tmp_path: Path) -> None:
    info = write_rollout_video(
        walker, walkers, jax.random.key(0), tmp_path / "out" / "walk.gif",
        fps=FPS, width=WIDTH, height=HEIGHT,
    )  # fmt: skip
    assert isinstance(info, VideoInfo)
    assert info.path == tmp_path / "out" / "walk.gif" and info.tiles == 2
    assert info.renderer == "matplotlib" or info.renderer.startswith("mujoco (")
    frames = gif_frames(info.path)
    assert len(frames) == info.frames and 2 <= info.frames <= 11
    assert frames[0].shape == (HEIGHT, 2 * WIDTH, 3)  # two tiles side by side
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).sum() > 0
    assert not list(info.path.parent.glob(".tmp-*"))  # the atomic write cleaned up


def test_fallback_renderer_when_forced(walker: Any, walkers: Any, tmp_path: Path) -> None:
    info = write_rollout_video(
        walker, walkers, jax.random.key(0), tmp_path / "walk.gif",
        fps=FPS, width=WIDTH, height=HEIGHT, renderer="matplotlib",
        labels=["first", "second"],
    )  # fmt: skip
    assert info.renderer == "matplotlib"
    frames = gif_frames(info.path)
    assert frames[0].shape == (HEIGHT, 2 * WIDTH, 3)
    # The robot is drawn (not only sky and ground) and moves.
    assert len({tuple(c) for c in frames[0].reshape(-1, 3)}) > 8
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).sum() > 0


def test_auto_falls_back_without_opengl(
    walker: Any, walkers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo import render_mujoco

    monkeypatch.setattr(render_mujoco, "_platform", None)
    monkeypatch.setattr(render_mujoco, "_failures", {})
    monkeypatch.setattr(render_mujoco, "_candidates", lambda: ["no-such-platform"])
    key = jax.random.key(0)
    info = write_rollout_video(
        walker, walkers, key, tmp_path / "walk.gif", fps=FPS, width=WIDTH, height=HEIGHT
    )
    assert info.renderer == "matplotlib"
    with pytest.raises(ConfigError, match="renderer='mujoco' cannot render here.*no-such-platform"):
        write_rollout_video(walker, walkers, key, tmp_path / "walk.gif", renderer="mujoco")


def test_mp4_without_imageio_ffmpeg(
    walker: Any, walkers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with pytest.raises(MissingDependencyError, match="pip install imageio-ffmpeg"):
        write_rollout_video(walker, walkers, jax.random.key(0), tmp_path / "walk.mp4")
    assert not list(tmp_path.iterdir())


def test_png_filmstrip(walker: Any, walkers: Any, tmp_path: Path) -> None:
    info = write_rollout_video(
        walker, walkers, jax.random.key(0), tmp_path / "strip.png",
        fps=FPS, width=WIDTH, height=HEIGHT, renderer="matplotlib",
    )  # fmt: skip
    with Image.open(info.path) as image:
        assert image.format == "PNG"
        assert image.size == (info.frames * WIDTH, 2 * HEIGHT)  # a row of frames per tile
    assert 2 <= info.frames <= 6


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # reading starts ffmpeg
def test_mp4(walker: Any, walkers: Any, tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    info = write_rollout_video(
        walker, walkers, jax.random.key(0), tmp_path / "walk.mp4",
        fps=FPS, width=WIDTH + 1, height=HEIGHT, renderer="matplotlib",
    )  # fmt: skip
    reader = imageio_ffmpeg.read_frames(str(info.path))
    meta = next(reader)
    assert meta["size"] == (2 * (WIDTH + 1) + 0, HEIGHT)  # odd widths are padded to even
    assert sum(1 for _ in reader) == info.frames


def test_bad_arguments_fail_before_any_rollout(walker: Any, walkers: Any, tmp_path: Path) -> None:
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match=r"'\.avi'.*\.gif, \.mp4, \.png"):
        write_rollout_video(walker, walkers, key, tmp_path / "walk.avi")
    with pytest.raises(ConfigError, match="no suffix"):
        write_rollout_video(walker, walkers, key, tmp_path / "walk")
    with pytest.raises(ConfigError, match="renderer must be one of auto, mujoco, matplotlib"):
        write_rollout_video(walker, walkers, key, tmp_path / "walk.gif", renderer="opengl")
    with pytest.raises(ConfigError, match="fps"):
        write_rollout_video(walker, walkers, key, tmp_path / "walk.gif", fps=0)
    with pytest.raises(ShapeError, match="2 policies, 1 labels"):
        write_rollout_video(walker, walkers, key, tmp_path / "walk.gif", labels=["one"])
    with pytest.raises(ConfigError, match="'lp-sphere' has none"):
        write_rollout_video(tasks.make("lp-sphere"), np.zeros((1, 4)), key, tmp_path / "x.gif")
    assert not list(tmp_path.iterdir())
    assert FORMATS == (".gif", ".mp4", ".png")


def test_can_render_video(walker: Any) -> None:
    assert can_render_video(walker)
    assert can_render_video(tasks.make("point-maze"))
    assert not can_render_video(tasks.make("lp-sphere"))


def test_point_maze_video(tmp_path: Path) -> None:
    task = tasks.make("point-maze", episode_length=10, policy_hidden_sizes=(4,))
    policies = task.init_genomes(jax.random.key(0), 3)
    info = write_rollout_video(
        task, policies, jax.random.key(0), tmp_path / "maze.gif", width=WIDTH, height=HEIGHT
    )
    assert info.renderer == "matplotlib" and info.tiles == 3 and info.frames == 11
    frames = gif_frames(info.path)
    assert frames[0].shape == (HEIGHT, 3 * WIDTH, 3)
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).sum() > 0
    with pytest.raises(ConfigError, match="point maze has none"):
        write_rollout_video(
            task, policies, jax.random.key(0), tmp_path / "m.gif", renderer="mujoco"
        )
    # One policy without a batch axis is one tile.
    single = jax.tree_util.tree_map(lambda x: x[0], policies)
    info = write_rollout_video(task, single, jax.random.key(0), tmp_path / "one.png", width=WIDTH,
                               height=HEIGHT, max_frames=3)  # fmt: skip
    assert info.tiles == 1 and info.frames == 3
    with Image.open(info.path) as image:
        assert image.size == (3 * WIDTH, HEIGHT)


# --------------------------------------------------------------- tours and card GIFs


@pytest.fixture(scope="module")
def maze_archive() -> ArchiveArtifact:
    """24 random point-maze policies in a 5 x 5 grid archive."""
    size = 24
    task = tasks.make("point-maze", episode_length=10, policy_hidden_sizes=(4,))
    genomes = task.init_genomes(jax.random.key(size), size)
    result = task.evaluate(genomes, jax.random.key(1))
    archive = Archive.grid(
        jax.tree_util.tree_map(lambda x: x[0], genomes), (5, 5),
        task.spec.descriptor_low, task.spec.descriptor_high, qd_offset=task.spec.qd_offset,
    )  # fmt: skip
    archive, _ = archive.insert(genomes, result.fitness, result.descriptors)
    spec = task.spec
    config: dict[str, Any] = {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": task.default_policy().to_dict(),
        "archive": archive_spec(archive, spec.descriptor_names),
        "evaluation": {"reset": spec.reset, "episode_length": spec.episode_length, "seed": 0},
    }
    return ArchiveArtifact(archive, config)


def test_select_tour_cells_best_first_and_spread(maze_archive: ArchiveArtifact) -> None:
    artifact = maze_archive
    cells = select_tour_cells(artifact, 4)
    assert cells.dtype == np.int64 and len(cells) == len(set(cells.tolist())) == 4
    assert set(cells.tolist()) <= set(artifact.elite_indices().tolist())
    assert cells[0] == artifact.top_indices(1)[0]
    # The second pick is the elite farthest from the best one.
    d = artifact.descriptors
    scaled = (d - d.min(0)) / np.where(np.ptp(d, 0) > 0, np.ptp(d, 0), 1)
    rows = {int(c): i for i, c in enumerate(artifact.cells)}
    far = np.linalg.norm(scaled - scaled[rows[int(cells[0])]], axis=1).max()
    assert np.isclose(np.linalg.norm(scaled[rows[int(cells[1])]] - scaled[rows[int(cells[0])]]),
                      far)  # fmt: skip
    everything = select_tour_cells(artifact.archive, 1000)  # an Archive works too
    assert sorted(everything.tolist()) == sorted(artifact.elite_indices().tolist())
    with pytest.raises(ConfigError, match="count"):
        select_tour_cells(artifact, 0)


def test_card_gif_only_when_asked(maze_archive: ArchiveArtifact, tmp_path: Path) -> None:
    artifact = maze_archive
    plain = artifact.save_pretrained(tmp_path / "plain", plot=False)
    assert not (plain / TOUR_NAME).exists()
    assert TOUR_NAME not in (plain / "README.md").read_text()
    with_gif = artifact.save_pretrained(tmp_path / "gif", plot=False, gif=True)
    assert (with_gif / TOUR_NAME).is_file()
    assert f"]({TOUR_NAME})" in (with_gif / "README.md").read_text()
    assert len(gif_frames(with_gif / TOUR_NAME)) == 11


def test_card_gif_of_a_generator_labels_requested_measures(tmp_path: Path) -> None:
    task = tasks.make("point-maze", episode_length=10, policy_hidden_sizes=(4,))

    class Sampler:
        """What write_card_gif needs of a generator."""

        descriptor_low, descriptor_high = (-1.0, -1.0), (1.0, 1.0)
        config = {"descriptors": {"names": ["x_position", "y_position"]}}
        asked: np.ndarray | None = None

        def make_task(self) -> Any:
            return task

        def sample(self, key: Any, measures: Any, num_samples: int = 1) -> Any:
            Sampler.asked = np.asarray(measures)
            return task.init_genomes(key, len(measures) * num_samples)

    info = write_card_gif(Sampler(), tmp_path / TOUR_NAME, count=3, width=WIDTH, height=HEIGHT)
    assert info is not None and info.tiles == 3
    assert Sampler.asked is not None and Sampler.asked.shape == (3, 2)
    assert np.all(np.abs(Sampler.asked) <= 0.7 + 1e-6)  # inside the bounds, off the walls
    assert write_card_gif(_NoScene(), tmp_path / "none.gif") is None
    assert not (tmp_path / "none.gif").exists()


class _NoScene:
    def make_task(self) -> Any:
        return tasks.make("lp-sphere")
