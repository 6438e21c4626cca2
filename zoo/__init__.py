"""qdzoo: train, share and reuse Quality-Diversity archives of neural-network policies.

What a user touches: tasks, archives, artifacts and Hub I/O::

    import zoo
    task = zoo.tasks.make("walker2d-uni", episode_length=100)
    archive = zoo.load_archive("runs/my-run")          # a directory, catalog name or repo id
    best = archive.genomes(archive.top_indices(4))
    zoo.list_models()                                   # the catalog of pretrained artifacts
    archive.fitness, archive.descriptors, archive.cells  # the elites as numpy arrays
    archive.data("pandas")                              # one row per elite (needs pandas)
    zoo.evaluation.reevaluate(archive, archive.top_indices(4))  # with the recorded protocol
    gen = zoo.load_generator("path-or-repo-id")         # a distilled policy generator
    zoo.load_artifact("walker2d-uni-ldm")               # either kind, read from its config
    policies = gen.sample(jax.random.key(0), measures=[[0.2, 0.8]], num_samples=4)
    zoo.rollouts.sample_rollouts(gen, [[0.2, 0.8]], num_samples=4, seed=0)
    zoo.from_pyribs(ribs_archive, task="point-maze")  # or zoo.from_qdax(repertoire, task=...)
"""

from __future__ import annotations

from zoo import catalog, errors, evaluation, rollouts, tasks
from zoo.archive import Archive, InsertInfo
from zoo.archive_artifact import ArchiveArtifact, load_archive
from zoo.artifact import Artifact
from zoo.catalog import CatalogEntry, list_models
from zoo.generator import Generator, load_generator
from zoo.importers import from_pyribs, from_qdax
from zoo.loading import load_artifact
from zoo.sequence import sequence, sequencing_success_rate

__all__ = [
    "Archive",
    "ArchiveArtifact",
    "Artifact",
    "CatalogEntry",
    "Generator",
    "InsertInfo",
    "catalog",
    "errors",
    "evaluation",
    "from_pyribs",
    "from_qdax",
    "list_models",
    "load_archive",
    "load_artifact",
    "load_generator",
    "rollouts",
    "sequence",
    "sequencing_success_rate",
    "tasks",
]
