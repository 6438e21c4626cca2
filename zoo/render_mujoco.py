"""Headless MuJoCo (OpenGL) frames of Brax rollouts, rendered in a child process.

MuJoCo picks its OpenGL platform (``MUJOCO_GL``: ``egl``, ``osmesa``, ``glfw``...) once,
when ``mujoco`` is first imported, and Brax imports it long before anything is rendered.
Changing the platform of the calling process is therefore not possible (and would change
it for the library's user too), so the frames are rendered by a short-lived child Python
process that imports only ``mujoco`` and ``numpy`` with ``MUJOCO_GL`` set:

- ``MUJOCO_GL`` set by the user: only that platform is tried;
- otherwise ``egl`` then ``osmesa`` on Linux (plus ``glfw`` when ``DISPLAY`` is set),
  ``cgl`` then ``glfw`` on macOS, ``glfw`` elsewhere.

The first platform that renders a probe scene is remembered for the life of the process
(:func:`gl_platform`); when none works :class:`GLUnavailableError` says what each one
answered, and :mod:`zoo.video` falls back to :mod:`zoo.render_fallback`.

The camera follows the root body (the torso) from the side, at a distance scaled to the
robot's size, with a fixed height so that the ground does not bob when the robot does.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GLUnavailableError",
    "camera_settings",
    "gl_platform",
    "quiet_fork",
    "render_qpos",
]

PROBE_TIMEOUT_S = 60.0
"""Seconds a platform probe may take (the first EGL context can take a few seconds)."""

_CHILD = r"""
import json, sys
import numpy as np
import mujoco

folder = sys.argv[1]
params = json.load(open(folder + "/params.json"))
model = mujoco.MjModel.from_binary_path(folder + "/model.mjb")
width, height = params["width"], params["height"]
model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
model.vis.headlight.ambient[:] = [0.35, 0.35, 0.35]
model.vis.headlight.diffuse[:] = [0.75, 0.75, 0.75]
renderer = mujoco.Renderer(model, height=height, width=width)
renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
data = mujoco.MjData(model)
camera = mujoco.MjvCamera()
camera.type = mujoco.mjtCamera.mjCAMERA_FREE
camera.distance = params["distance"]
camera.azimuth = params["azimuth"]
camera.elevation = params["elevation"]
qpos = np.load(folder + "/qpos.npy")
frames = np.lib.format.open_memmap(
    folder + "/frames.npy", mode="w+", dtype=np.uint8, shape=(len(qpos), height, width, 3)
)
body = params["body"]
for i, q in enumerate(qpos):
    data.qpos[:] = q
    mujoco.mj_forward(model, data)
    x, y = data.xpos[body][0], data.xpos[body][1]
    camera.lookat[:] = [x, y, params["lookat_z"]]
    renderer.update_scene(data, camera=camera)
    frames[i] = renderer.render()
frames.flush()
"""

_PROBE_MODEL = (
    '<mujoco><worldbody><light pos="0 0 3"/><geom type="plane" size="1 1 .1"/>'
    '<body pos="0 0 .5"><freejoint/><geom type="sphere" size=".1"/></body>'
    "</worldbody></mujoco>"
)

_platform: str | None = None
_failures: dict[str, str] = {}


class GLUnavailableError(RuntimeError):
    """No OpenGL platform could render a MuJoCo scene in this environment."""


@contextlib.contextmanager
def quiet_fork() -> Iterator[None]:
    """Silence JAX's warning about ``os.fork`` while starting a child process: the child
    runs another program at once (``fork`` + ``exec``), which is safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        yield


def _candidates() -> list[str]:
    """The ``MUJOCO_GL`` values to try, in order."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return [chosen]
    system = platform.system()
    if system == "Linux":
        return ["egl", "osmesa", *(["glfw"] if os.environ.get("DISPLAY") else [])]
    if system == "Darwin":
        return ["cgl", "glfw"]
    return ["glfw"]


def _run_child(folder: Path, gl: str, timeout: float | None) -> None:
    """Render ``folder``'s ``model.mjb`` / ``qpos.npy`` into ``frames.npy`` with ``gl``.

    Raises:
        GLUnavailableError: the child failed; the message is the end of its error output.
    """
    env = {**os.environ, "MUJOCO_GL": gl}
    if gl == "egl":
        env.setdefault("PYOPENGL_PLATFORM", "egl")
    elif gl == "osmesa":
        env.setdefault("PYOPENGL_PLATFORM", "osmesa")
    try:
        with quiet_fork():
            done = subprocess.run(
                [sys.executable, "-P", "-c", _CHILD, str(folder)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
    except subprocess.TimeoutExpired as error:
        raise GLUnavailableError(f"{gl}: no answer within {timeout:g} s") from error
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise GLUnavailableError(f"{gl}: {lines[-1] if lines else f'exit {done.returncode}'}")


def _probe(gl: str) -> None:
    """Render a tiny scene with ``gl``; raise :class:`GLUnavailableError` if it fails."""
    import mujoco

    model = mujoco.MjModel.from_xml_string(_PROBE_MODEL)
    with tempfile.TemporaryDirectory(prefix="qdzoo-gl-probe-") as name:
        folder = Path(name)
        _write_inputs(folder, model, np.zeros((1, model.nq)), 16, 16, camera_settings(model))
        _run_child(folder, gl, PROBE_TIMEOUT_S)
        frames = np.load(folder / "frames.npy")
        if frames.shape != (1, 16, 16, 3) or not frames.any():
            raise GLUnavailableError(f"{gl}: rendered an empty image")


def gl_platform() -> str:
    """The first ``MUJOCO_GL`` platform that renders here (probed once per process).

    Raises:
        GLUnavailableError: none works; the message lists what each platform answered.
    """
    global _platform
    if _platform is not None:
        return _platform
    for gl in _candidates():
        if gl in _failures:
            continue
        try:
            _probe(gl)
        except GLUnavailableError as error:
            _failures[gl] = str(error)
            continue
        _platform = gl
        return gl
    tried = "; ".join(_failures[gl] for gl in _candidates() if gl in _failures)
    raise GLUnavailableError(
        f"no OpenGL platform can render MuJoCo scenes here (tried {tried}). Install EGL "
        "(Debian/Ubuntu: apt-get install libegl1) or OSMesa (libosmesa6), set MUJOCO_GL to "
        "a platform that works, or render with renderer='matplotlib'"
    )


def camera_settings(model: Any) -> dict[str, float]:
    """A side camera for ``model`` (a ``mujoco.MjModel``) that follows its root body.

    The distance scales with the robot's size at its initial pose (the geoms that are not
    planes), the camera looks at 60 % of the root body's initial height.
    """
    import mujoco

    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    solid = [g for g in range(model.ngeom) if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE]
    if solid:
        radius = model.geom_rbound[solid][:, None]
        low = (data.geom_xpos[solid] - radius).min(axis=0)
        high = (data.geom_xpos[solid] + radius).max(axis=0)
        size = float(np.max(high - low))
        top = float(high[2])
    else:
        size, top = 1.0, 1.0
    body = 1 if model.nbody > 1 else 0
    return {
        "distance": max(2.0, 2.0 * size),
        "azimuth": 90.0,
        "elevation": -12.0,
        "lookat_z": 0.6 * top,
        "body": body,
    }


def _write_inputs(
    folder: Path,
    model: Any,
    qpos: np.ndarray,
    width: int,
    height: int,
    camera: dict[str, float],
) -> None:
    import mujoco

    mujoco.mj_saveModel(model, str(folder / "model.mjb"), None)
    np.save(folder / "qpos.npy", np.asarray(qpos, np.float64))
    (folder / "params.json").write_text(
        json.dumps({"width": int(width), "height": int(height), **camera})
    )


def render_qpos(
    model: Any, qpos: Sequence[np.ndarray], width: int, height: int
) -> tuple[list[np.ndarray], str]:
    """Render each trajectory of joint positions with MuJoCo's OpenGL renderer.

    Args:
        model: the ``mujoco.MjModel`` of the scene (a Brax system's ``mj_model``).
        qpos: one ``[T_i, nq]`` array per trajectory (Brax's ``pipeline_state.q``).
        width, height: frame size in pixels.

    Returns:
        One ``[T_i, height, width, 3]`` uint8 array per trajectory, and the platform used.

    Raises:
        GLUnavailableError: no OpenGL platform works here.
    """
    gl = gl_platform()
    camera = camera_settings(model)
    lengths = [len(q) for q in qpos]
    with tempfile.TemporaryDirectory(prefix="qdzoo-render-") as name:
        folder = Path(name)
        _write_inputs(folder, model, np.concatenate(list(qpos)), width, height, camera)
        _run_child(folder, gl, PROBE_TIMEOUT_S + 2.0 * sum(lengths))
        frames = np.load(folder / "frames.npy")
    splits = np.cumsum(lengths)[:-1]
    return [np.array(part) for part in np.split(frames, splits)], gl
