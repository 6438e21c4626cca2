"""What storing the bundled robust archives' genomes in float16 would cost, measured.

For every bundled ``*-ascii-me-robust`` archive (or the archives named on the command line),
the elites are robustly re-evaluated twice with the archive's own protocol (same ``K``, seed
and batch size, so the same reset keys): once as stored (float32) and once rounded to float16
(:func:`zoo.evaluation.round_genomes`), each time into a fresh archive of the same grid
(:func:`zoo.robust.reevaluate_archive`). The float32 run reproduces the stored archive, so
the two columns differ by the rounding alone. Printed side by side: QD score, coverage,
elites, the elites whose float16 copy stays in its cell, and the mean absolute change of the
mean fitness and mean descriptors over the cells both archives hold.

Usage::

    python benchmarks/float16_robust.py                       # the six bundled archives
    python benchmarks/float16_robust.py hopper-uni-ascii-me-robust
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI (training/cli.py)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

from zoo.archive_artifact import ArchiveArtifact, load_archive  # noqa: E402
from zoo.evaluation import round_genomes  # noqa: E402
from zoo.robust import RobustProtocol, reevaluate_archive  # noqa: E402

TASKS = ("hopper-uni", "walker2d-uni", "halfcheetah-uni", "ant-uni", "ant-omni", "humanoid-uni")
ARCHIVES = tuple(f"{task}-ascii-me-robust" for task in TASKS)


def rounded(artifact: ArchiveArtifact, dtype: str) -> ArchiveArtifact:
    """The artifact with every genome rounded to ``dtype`` (and cast back to float32)."""
    archive = artifact.archive
    genomes = round_genomes(archive.genomes, dtype)
    return ArchiveArtifact(eqx.tree_at(lambda a: a.genomes, archive, genomes), artifact.config)


def compare(name: str) -> dict[str, float]:
    """Robust re-evaluations of ``name``'s elites in float32 and float16, side by side."""
    artifact = load_archive(name)
    protocol = RobustProtocol.from_config(artifact.config)
    batch = int(artifact.config["reevaluation"]["batch_size"])
    cells = artifact.elite_indices()
    runs = {}
    for dtype in ("float32", "float16"):
        start = time.perf_counter()
        result = reevaluate_archive(
            rounded(artifact, dtype), protocol.episodes, protocol.seed, batch_size=batch
        )
        runs[dtype] = (result, time.perf_counter() - start)
    stored = artifact.metrics()
    row: dict[str, float] = {"stored_qd": stored["qd_score"], "elites": float(cells.size)}
    for dtype, (result, wall) in runs.items():
        m = result.metrics()
        row[f"{dtype}_qd"] = m["qd_score"]
        row[f"{dtype}_coverage"] = m["coverage"]
        row[f"{dtype}_elites"] = m["num_elites"]
        row[f"{dtype}_wall"] = wall
    a, b = runs["float32"][0].archive, runs["float16"][0].archive
    both = np.asarray(a.occupied) & np.asarray(b.occupied)
    row["same_cells"] = float(runs["float16"][0].config["reevaluation"]["elites_in_same_cell"])
    row["fitness_change"] = float(np.abs(np.asarray(a.fitness - b.fitness))[both].mean())
    change = np.abs(np.asarray(a.descriptors - b.descriptors))[both]
    row["descriptor_change"] = float(change.mean())
    return row


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("archives", nargs="*", default=list(ARCHIVES), help="catalog names")
    args = p.parse_args()
    header = (
        f"{'archive':<32}{'elites':>7}{'QD f32':>11}{'QD f16':>11}{'ratio':>8}{'cov f32':>9}"
        f"{'cov f16':>9}{'same cells':>11}{'|dfit|':>9}{'|ddesc|':>9}"
    )
    print(header)
    for name in args.archives:
        r = compare(name)
        print(
            f"{name:<32}{r['elites']:>7.0f}{r['float32_qd']:>11.1f}{r['float16_qd']:>11.1f}"
            f"{r['float16_qd'] / r['float32_qd']:>8.4f}{r['float32_coverage']:>9.4f}"
            f"{r['float16_coverage']:>9.4f}{r['same_cells']:>11.0f}{r['fitness_change']:>9.4f}"
            f"{r['descriptor_change']:>9.5f}",
            flush=True,
        )
        if abs(r["float32_qd"] - r["stored_qd"]) > 1e-3 * abs(r["stored_qd"]):
            print(
                f"  note: float32 re-evaluation {r['float32_qd']:.1f} != stored "
                f"{r['stored_qd']:.1f}"
            )
    print(
        "|dfit|, |ddesc|: mean absolute change of the mean fitness / descriptors over the cells "
        "both archives hold; same cells: float16 elites whose mean descriptors stay in the "
        "stored cell. float16 halves the genomes' bytes."
    )


if __name__ == "__main__":
    main()
