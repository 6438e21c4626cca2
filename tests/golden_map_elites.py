"""Reference digests of MAP-Elites archives, recorded before the QD core was refactored.

The QD core (loop, emitters, episode protocol) may change how a run is organised but never
what MAP-Elites computes: these runs must give bit-identical archives forever after. The
digests were written down by running this file on the code before the refactor::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/golden_map_elites.py

(4 host devices, as the test suite uses: a deterministic-reset evaluation compiled for
another per-device batch may round differently.)
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from typing import Any

import jax
import numpy as np

# The bundled recipe's training config (training/recipes/walker2d-uni-map-elites.json).
RECIPE = {
    "task": "walker2d-uni",
    "algorithm": "map-elites",
    "evaluations": 51200,
    "batch_size": 256,
    "grid": [16, 16],
    "cvt_cells": None,
    "cvt_samples": 50000,
    "task_kwargs": {"episode_length": 100, "backend": "spring", "reset": "deterministic"},
    "hyperparameters": {},
    "policy": {"hidden_sizes": [64, 64]},
    "seed": 0,
    "chunk": 10,
}
# Its first 20 iterations (two chunks): the fast test.
RECIPE_SHORT = {**RECIPE, "evaluations": 256 * 20}
POINT_MAZE = {
    "task": "point-maze",
    "algorithm": "map-elites",
    "evaluations": 64 * 30,
    "batch_size": 64,
    "grid": [10, 10],
    "task_kwargs": {"episode_length": 50},
    "policy": {"hidden_sizes": [16, 16]},
    "hyperparameters": {"iso_sigma": 0.01, "line_sigma": 0.1},
    "seed": 7,
    "chunk": 10,
}

# Digests before the refactor (4 host devices).
DIGESTS = {
    "recipe": "39f5ea17720b050391f40284facaad998c9127dbdda2e55fa6cf0d53352a724d",
    "recipe_short": "a413d1ff7246ac720abc904b1b9216d223890e42914bf86bc25f14664d23fbb6",
    "point_maze": "2e5c0468ecc60f19fab99a317c82e460da60b7daeeff3c86e308fc2f517efa3c",
}


def archive_digest(archive: Any) -> str:
    """sha256 over what defines an archive's content: occupancy, fitness, descriptors,
    thresholds and every genome leaf (in tree order), as raw bytes."""
    digest = hashlib.sha256()
    named = [
        ("occupied", archive.occupied),
        ("fitness", archive.fitness),
        ("descriptors", archive.descriptors),
        ("thresholds", archive.thresholds),
    ]
    named += [
        (f"genome{i}", leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(archive.genomes))
    ]
    for name, value in named:
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def run_digest(config: dict[str, Any]) -> str:
    """Train ``config`` in a temporary directory and return its archive digest."""
    from training.qd.run import TrainConfig, train

    with tempfile.TemporaryDirectory() as out:
        artifact = train(TrainConfig.from_dict(config), out, progress=False, save=False)
    return archive_digest(artifact.archive)


if __name__ == "__main__":
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    names = sys.argv[1:] or ["point_maze", "recipe_short", "recipe"]
    configs = {"recipe": RECIPE, "recipe_short": RECIPE_SHORT, "point_maze": POINT_MAZE}
    for name in names:
        print(f'    "{name}": "{run_digest(configs[name])}",', flush=True)
