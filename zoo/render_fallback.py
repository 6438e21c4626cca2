"""Frames drawn with matplotlib: no OpenGL, no network, no system library.

- Brax robots (:func:`draw_robot`): a side view (``x`` right, ``z`` up) of every solid
  geom of the MuJoCo model (capsules, spheres, boxes, cylinders...) at each state, placed
  by ``mujoco.mj_forward`` (CPU kinematics, no renderer), following the root body (the
  torso) along ``x``. The ground is drawn with a mark every half metre, so that forward
  motion shows although the view follows the robot; geoms farther from the viewer
  (larger ``y``) are drawn first and lighter.
- The point maze (:func:`draw_point_maze`): a top view of the arena, its walls, the goal
  and the start, with the path walked so far and the point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["draw_point_maze", "draw_robot"]

_COLOURS = ("#3b6ea8", "#d1603d", "#4f9d69", "#8e6bb8", "#c9a227", "#5aa7b8", "#b8527e")
_GROUND = "#d8cfc0"
_SKY = "#f4f6f8"


def _canvas(width: int, height: int) -> tuple[Any, Any, Any]:
    """A figure of ``width x height`` pixels, its Agg canvas and an axes filling it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    return figure, canvas, axes


def _pixels(canvas: Any, width: int, height: int) -> np.ndarray:
    """The canvas as a ``[height, width, 3]`` uint8 image."""
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3]
    return np.ascontiguousarray(image[:height, :width])


def _lighten(colour: str, amount: float) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (monotone chain), counter-clockwise."""
    pts = sorted(set(map(tuple, np.round(points, 9))))
    if len(pts) <= 2:
        return np.asarray(pts)

    def cross(o: tuple[float, ...], a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, ...]] = []
    upper: list[tuple[float, ...]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1])


def _geom_patches(
    kind: int, position: np.ndarray, rotation: np.ndarray, size: np.ndarray, colour: Any
) -> list[Any]:
    """matplotlib patches of one geom projected on the ``x``-``z`` plane."""
    import mujoco
    from matplotlib.patches import Circle, Polygon

    geom = mujoco.mjtGeom
    centre = position[[0, 2]]
    if kind in (geom.mjGEOM_CAPSULE, geom.mjGEOM_CYLINDER):
        radius, half = float(size[0]), float(size[1])
        axis = rotation[:, 2][[0, 2]] * half
        a, b = centre - axis, centre + axis
        length = float(np.linalg.norm(b - a))
        patches: list[Any] = []
        if length > 1e-6:
            normal = np.array([-(b - a)[1], (b - a)[0]]) / length * radius
            corners = np.stack([a + normal, b + normal, b - normal, a - normal])
            patches.append(Polygon(corners, closed=True, color=colour, lw=0))
        if kind == geom.mjGEOM_CAPSULE or length <= 1e-6:
            patches += [Circle(tuple(a), radius, color=colour, lw=0)]
            patches += [Circle(tuple(b), radius, color=colour, lw=0)]
        return patches
    if kind == geom.mjGEOM_SPHERE:
        return [Circle(tuple(centre), float(size[0]), color=colour, lw=0)]
    if kind == geom.mjGEOM_BOX:
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        corners = position + (signs * size) @ rotation.T
        return [Polygon(_hull(corners[:, [0, 2]]), closed=True, color=colour, lw=0)]
    if kind == geom.mjGEOM_ELLIPSOID:
        radius = float(np.mean(size[[0, 2]]))
        return [Circle(tuple(centre), radius, color=colour, lw=0)]
    return []


def draw_robot(
    model: Any, qpos: np.ndarray, width: int, height: int, *, follow_body: int = 1
) -> np.ndarray:
    """Side views (``x``-``z``) of a MuJoCo model at each row of ``qpos``.

    Args:
        model: a ``mujoco.MjModel`` (a Brax system's ``mj_model``).
        qpos: ``[T, nq]`` joint positions (Brax's ``pipeline_state.q``).
        width, height: frame size in pixels.
        follow_body: the body the view follows along ``x`` (1: the root body).

    Returns:
        ``[T, height, width, 3]`` uint8 frames.
    """
    import mujoco
    from matplotlib.patches import Rectangle

    data = mujoco.MjData(model)
    solid = [g for g in range(model.ngeom) if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE]
    # View size from the initial pose: the robot fills about half of the frame height.
    data.qpos[:] = qpos[0]
    mujoco.mj_forward(model, data)
    radius = model.geom_rbound[solid][:, None] if solid else np.zeros((0, 1))
    if solid:
        low = (data.geom_xpos[solid] - radius).min(axis=0)
        high = (data.geom_xpos[solid] + radius).max(axis=0)
        extent = float(max(high[0] - low[0], high[2] - max(low[2], 0.0), 0.5))
    else:
        extent = 1.0
    view_height = 1.8 * extent
    view_width = view_height * width / height
    bottom = -0.2 * view_height
    body = min(follow_body, model.nbody - 1)
    colours = {
        g: _COLOURS[(int(model.geom_bodyid[g]) - 1) % len(_COLOURS)] for g in range(model.ngeom)
    }

    figure, canvas, axes = _canvas(width, height)
    frames = np.empty((len(qpos), height, width, 3), np.uint8)
    for t, q in enumerate(qpos):
        data.qpos[:] = q
        mujoco.mj_forward(model, data)
        x = float(data.xpos[body][0])
        axes.clear()
        axes.set_axis_off()
        axes.set_facecolor(_SKY)
        left, right = x - view_width / 2, x + view_width / 2
        axes.set_xlim(left, right)
        axes.set_ylim(bottom, bottom + view_height)
        axes.add_patch(Rectangle((left, 0.0), view_width, view_height, color=_SKY, zorder=0))
        axes.add_patch(Rectangle((left, bottom), view_width, -bottom, color=_GROUND, zorder=1))
        marks = np.arange(np.floor(left * 2) / 2, right + 0.5, 0.5)
        for mark in marks:
            major = abs(mark - round(mark)) < 1e-6
            axes.plot(
                [mark, mark],
                [0.0, bottom * (0.5 if major else 0.25)],
                color="#8a7f6e",
                lw=1.2 if major else 0.8,
                zorder=2,
            )
            if major:
                axes.text(
                    mark, bottom * 0.75, f"{mark:g} m", ha="center", va="center",
                    fontsize=6, color="#6b6152", zorder=2,
                )  # fmt: skip
        axes.plot([left, right], [0.0, 0.0], color="#6b6152", lw=1.0, zorder=2)
        depth = data.geom_xpos[solid][:, 1] if solid else np.zeros(0)
        span = float(np.ptp(depth)) if len(solid) else 0.0
        order = np.argsort(-depth, kind="stable")
        for rank, i in enumerate(order):
            g = solid[i]
            far = 0.0 if span < 1e-6 else 0.45 * (depth[i] - depth.min()) / span
            colour = _lighten(colours[g], far)
            for patch in _geom_patches(
                int(model.geom_type[g]),
                data.geom_xpos[g],
                data.geom_xmat[g].reshape(3, 3),
                model.geom_size[g],
                colour,
            ):
                patch.set_zorder(3 + rank)
                axes.add_patch(patch)
        axes.set_aspect("equal", adjustable="box")
        frames[t] = _pixels(canvas, width, height)
    return frames


def draw_point_maze(
    positions: np.ndarray,
    width: int,
    height: int,
    *,
    walls: Sequence[tuple[float, float, float]],
    arena: tuple[float, float],
    goal: tuple[float, float],
    goal_half_width: float,
) -> np.ndarray:
    """Top views of the point maze, one per position of the path ``[T, 2]``.

    Frame ``t`` shows the walls, the goal (green), the start (grey), the path up to
    position ``t`` and the point at it.

    Returns:
        ``[T, height, width, 3]`` uint8 frames.
    """
    from matplotlib.patches import Rectangle

    low, high = arena
    figure, canvas, axes = _canvas(width, height)
    axes.set_axis_off()
    axes.set_facecolor("white")
    margin = 0.05 * (high - low)
    axes.set_xlim(low - margin, high + margin)
    axes.set_ylim(low - margin, high + margin)
    axes.set_aspect("equal", adjustable="box")
    axes.add_patch(
        Rectangle((low, low), high - low, high - low, fill=False, ec="#333333", lw=2.0, zorder=1)
    )
    for wall_y, x_low, x_high in walls:
        axes.plot([x_low, x_high], [wall_y, wall_y], color="#333333", lw=3.0, zorder=1)
    side = 2 * goal_half_width
    axes.add_patch(
        Rectangle(
            (goal[0] - goal_half_width, goal[1] - goal_half_width), side, side,
            color="#4f9d69", zorder=2,
        )
    )  # fmt: skip
    axes.plot(*positions[0], marker="s", color="#999999", ms=5, zorder=2)
    (path,) = axes.plot([], [], color="#3b6ea8", lw=1.5, zorder=3)
    (point,) = axes.plot([], [], marker="o", color="#d1603d", ms=7, zorder=4)
    frames = np.empty((len(positions), height, width, 3), np.uint8)
    for t in range(len(positions)):
        path.set_data(positions[: t + 1, 0], positions[: t + 1, 1])
        point.set_data(positions[t : t + 1, 0], positions[t : t + 1, 1])
        frames[t] = _pixels(canvas, width, height)
    return frames
