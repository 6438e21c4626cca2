"""Draw the top views of the deceptive ant tasks into docs/ant_trap.png and docs/ant_maze.png.

Walls, start, goal (ant-maze) or trap pocket (ant-trap), and the descriptor bounds, all
read from :mod:`zoo.tasks.deceptive_ant` (nothing is built, Brax is not imported)::

    python scripts/draw_task_layouts.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from zoo.tasks.deceptive_ant import (  # noqa: E402
    MAZE_BOUNDS,
    MAZE_GOAL,
    MAZE_WALLS,
    TRAP_BOUNDS,
    TRAP_WALLS,
    Wall,
)

START = (0.0, 0.0)


def draw(
    title: str,
    walls: Sequence[Wall],
    bounds: tuple[tuple[float, float], tuple[float, float]],
    goal: tuple[float, float] | None,
    size: tuple[float, float],
) -> plt.Figure:
    """One top view: walls (filled), descriptor bounds (dashed), start and goal."""
    figure, axes = plt.subplots(figsize=size, dpi=90)
    (x_low, y_low), (x_high, y_high) = bounds
    axes.add_patch(
        Rectangle(
            (x_low, y_low),
            x_high - x_low,
            y_high - y_low,
            fill=False,
            linestyle="--",
            edgecolor="0.2",
            zorder=3,
            label="descriptor bounds",
        )
    )
    for i, wall in enumerate(walls):
        axes.add_patch(
            Rectangle(
                (wall.x_low, wall.y_low),
                wall.x_high - wall.x_low,
                wall.y_high - wall.y_low,
                facecolor="#5a73b3",
                edgecolor="#2d3a5c",
                label="walls" if i == 0 else None,
            )
        )
    axes.plot(*START, marker="o", color="#2e8b57", markersize=8, linestyle="", label="start")
    axes.annotate("", xytext=START, xy=(START[0] + 3.0, START[1]), arrowprops={"arrowstyle": "->"})
    if goal is not None:
        axes.plot(*goal, marker="*", color="#d62728", markersize=14, linestyle="", label="goal")
    xs = [x_low, x_high, *(w.x_low for w in walls), *(w.x_high for w in walls)]
    ys = [y_low, y_high, *(w.y_low for w in walls), *(w.y_high for w in walls)]
    axes.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
    axes.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    axes.set_aspect("equal")
    axes.set_xlabel("x (m)")
    axes.set_ylabel("y (m)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    figure.tight_layout()
    return figure


def save(figure: plt.Figure, path: Path) -> None:
    """Write ``figure`` as a PNG at ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, format="png")
        os.chmod(temporary, 0o644)  # mkstemp makes the file private
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs")
    args = parser.parse_args(argv)
    trap = draw(
        "ant-trap: the pocket in front of the start",
        TRAP_WALLS,
        TRAP_BOUNDS,
        None,
        (8.4, 4.0),
    )
    trap.axes[0].annotate("trap", (9.0, 0.0), ha="center", va="center", color="#2d3a5c")
    save(trap, args.out / "ant_trap.png")
    maze = draw(
        "ant-maze: reward -distance to the goal",
        MAZE_WALLS,
        MAZE_BOUNDS,
        MAZE_GOAL,
        (7.2, 5.6),
    )
    save(maze, args.out / "ant_maze.png")
    for name in ("ant_trap.png", "ant_maze.png"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
