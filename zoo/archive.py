"""The archive: one elite per cell of a tessellated descriptor space, as an immutable pytree.

An :class:`Archive` holds, for each of its ``cells``, a genome, its fitness and
descriptors, an acceptance threshold and optional extra per-elite arrays. ``insert``
returns a new archive and an :class:`InsertInfo`; nothing is modified in place, so the
archive can be carried through ``jax.lax.scan`` and donated to ``jax.jit``::

    archive = Archive.grid(policy_spec.template(), dims=(32, 32), low=(0, 0), high=(1, 1))
    archive, info = archive.insert(population, fitness, descriptors)

Insertion follows pyribs 0.12 (``GridArchive.add`` / ``CVTArchive.add``) exactly:

- A solution's cell is its grid cell (:meth:`Archive.cell_index`) or its nearest CVT
  centroid. Descriptors outside ``[low, high]`` land in the edge cells of a grid.
- A solution *can be inserted* when its fitness is strictly above its cell's threshold
  (``threshold_min`` for an empty cell). Status and improvement are computed against the
  archive *before* the batch: status 2 (new cell), 1 (improved an occupied cell), 0
  (rejected); improvement = fitness - threshold, where the threshold of a new cell is read
  as 0 when ``threshold_min = -inf`` and as ``threshold_min`` otherwise.
- Per cell, the best insertable solution of the batch is stored (ties: first in the batch).
  With ``learning_rate < 1`` it replaces the elite even if the elite's fitness was higher:
  such an archive is not elitist.
- Thresholds: with ``threshold_min = -inf`` (MAP-Elites, CMA-ME) the new threshold is the
  stored fitness. With a finite ``threshold_min`` (CMA-MAE), for the ``n`` solutions that
  can be inserted in a cell, of mean fitness ``mean``:
  ``t_new = (1 - a)**n * t + mean * (1 - (1 - a)**n)`` with ``a = learning_rate``.
- Solutions whose fitness or descriptors are not finite are never inserted (status 0,
  improvement -inf, cell -1); pyribs raises on them, here they are counted in
  ``num_nonfinite``.

Everything is vectorised (segment reductions and scatters with ``mode="drop"``); shapes
and dtypes never change, so an insert inside a jitted loop never recompiles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from zoo.cvt import as_bounds, cvt_centroids, nearest_centroid
from zoo.errors import ConfigError, ShapeError

__all__ = ["Archive", "InsertInfo", "cvt_centroids"]

NEW_CELL = 2
IMPROVED_CELL = 1
REJECTED = 0


class InsertInfo(eqx.Module):
    """What happened to each solution of a batch given to :meth:`Archive.insert`.

    Attributes:
        status: ``[batch]`` int32: 2 new cell, 1 improved an occupied cell, 0 rejected.
        improvement: ``[batch]`` fitness minus the cell's threshold before the batch (pyribs'
            ``value``); for a new cell the threshold is read as 0 when ``threshold_min`` is
            -inf and as ``threshold_min`` otherwise. -inf for non-finite solutions.
        cell: ``[batch]`` int32 cell index of each solution; -1 for non-finite solutions.
    """

    status: Int[Array, " batch"]
    improvement: Float[Array, " batch"]
    cell: Int[Array, " batch"]


def _is_array(x: Any) -> bool:
    """Whether a leaf is stored per cell (arrays; shape-dtype structs in templates)."""
    return isinstance(x, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct)


def _default_float() -> jnp.dtype:
    return jnp.zeros(()).dtype  # float32, or float64 under jax_enable_x64


def _check_settings(
    learning_rate: float, threshold_min: float, qd_offset: float
) -> tuple[float, float, float]:
    """The three threshold settings as Python floats; ConfigError if out of range."""
    try:
        learning_rate, threshold_min = float(learning_rate), float(threshold_min)
        qd_offset = float(qd_offset)
    except (TypeError, ValueError):
        raise ConfigError(
            f"learning_rate, threshold_min and qd_offset must be numbers, given "
            f"{learning_rate!r}, {threshold_min!r} and {qd_offset!r}"
        ) from None
    if not 0.0 <= learning_rate <= 1.0:
        raise ConfigError(
            f"learning_rate must be a number in [0, 1], given {learning_rate!r}; use 1.0 for "
            "MAP-Elites and a small value such as 0.01 for CMA-MAE"
        )
    if math.isnan(threshold_min) or threshold_min == math.inf:
        raise ConfigError(
            f"threshold_min must be finite or -inf, given {threshold_min!r}; use -inf for "
            "MAP-Elites or a lower bound of the fitness for CMA-MAE"
        )
    if threshold_min == -math.inf and learning_rate != 1.0:
        raise ConfigError(
            f"threshold_min=-inf requires learning_rate=1.0, given learning_rate="
            f"{learning_rate!r}; for CMA-MAE also pass a finite threshold_min (e.g. the "
            "lowest fitness the task can give), or set learning_rate=1.0 for MAP-Elites"
        )
    if not math.isfinite(qd_offset):
        raise ConfigError(f"qd_offset must be finite, given {qd_offset!r}")
    return learning_rate, threshold_min, qd_offset


def _empty_store(template: Any, num_cells: int, what: str) -> Any:
    """Zeros ``[num_cells, *leaf.shape]`` for every array leaf of one item."""
    leaves = [x for x in jax.tree_util.tree_leaves(template) if _is_array(x)]
    if what == "genome_template" and not leaves:
        raise ConfigError(
            f"genome_template holds no arrays, given {type(template).__name__}; pass one "
            "genome, e.g. policy_spec.template() or jnp.zeros(genome_size)"
        )
    return jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_cells, *x.shape), x.dtype) if _is_array(x) else x,
        template,
    )


class Archive(eqx.Module):
    """Elites of a tessellated descriptor space (grid or CVT); an immutable pytree.

    Build one with :meth:`grid` or :meth:`cvt`. Empty cells hold zero genomes, zero
    descriptors and extras, fitness -inf and threshold ``threshold_min``.

    Attributes:
        genomes: pytree of one genome with a leading ``cells`` axis on every array leaf.
        fitness: ``[cells]`` fitness of each elite, -inf where empty.
        descriptors: ``[cells, k]`` descriptors of each elite, 0 where empty.
        thresholds: ``[cells]`` acceptance threshold, ``threshold_min`` where empty.
        occupied: ``[cells]`` whether a cell holds an elite.
        extras: per-elite extra arrays, each ``[cells, ...]`` (e.g. trajectories).
        centroids: ``[cells, k]`` cell centres (grid) or CVT centroids.
        num_nonfinite: ``[]`` int32, how many non-finite solutions were rejected so far.
        tessellation: ``"grid"`` or ``"cvt"``.
        grid_shape: cells per dimension of a grid; ``None`` for a CVT.
        low: lower bounds of the descriptor space (a CVT only records them).
        high: upper bounds of the descriptor space.
        learning_rate: threshold learning rate ``a`` in [0, 1] (1 for MAP-Elites).
        threshold_min: threshold of an empty cell; -inf for MAP-Elites, finite for CMA-MAE.
        qd_offset: subtracted from every elite's fitness in the QD score.
        epsilon: added before flooring grid coordinates (pyribs' ``epsilon``, 1e-6).
    """

    genomes: Any
    fitness: Float[Array, " cells"]
    descriptors: Float[Array, "cells k"]
    thresholds: Float[Array, " cells"]
    occupied: Bool[Array, " cells"]
    extras: dict[str, Array]
    centroids: Float[Array, "cells k"]
    num_nonfinite: Int[Array, ""]
    tessellation: str = eqx.field(static=True)
    grid_shape: tuple[int, ...] | None = eqx.field(static=True)
    low: tuple[float, ...] = eqx.field(static=True)
    high: tuple[float, ...] = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True, default=1.0)
    threshold_min: float = eqx.field(static=True, default=-math.inf)
    qd_offset: float = eqx.field(static=True, default=0.0)
    epsilon: float = eqx.field(static=True, default=1e-6)

    # ----------------------------------------------------------------- construction

    @classmethod
    def _empty(
        cls,
        genome_template: Any,
        centroids: Float[Array, "cells k"],
        tessellation: str,
        grid_shape: tuple[int, ...] | None,
        low: tuple[float, ...],
        high: tuple[float, ...],
        learning_rate: float,
        threshold_min: float,
        qd_offset: float,
        extras_template: dict[str, ArrayLike] | None,
        epsilon: float = 1e-6,
    ) -> Archive:
        learning_rate, threshold_min, qd_offset = _check_settings(
            learning_rate, threshold_min, qd_offset
        )
        num_cells, size = centroids.shape
        dtype = centroids.dtype
        extras_template = dict(extras_template or {})
        for name in extras_template:
            if not isinstance(name, str):
                raise ConfigError(f"extras_template keys must be strings, given {name!r}")
        return cls(
            genomes=_empty_store(genome_template, num_cells, "genome_template"),
            fitness=jnp.full((num_cells,), -jnp.inf, dtype),
            descriptors=jnp.zeros((num_cells, size), dtype),
            thresholds=jnp.full((num_cells,), threshold_min, dtype),
            occupied=jnp.zeros((num_cells,), bool),
            extras={
                name: _empty_store(
                    value if _is_array(value) else jnp.asarray(value), num_cells, "extras_template"
                )
                for name, value in extras_template.items()
            },
            centroids=centroids,
            num_nonfinite=jnp.zeros((), jnp.int32),
            tessellation=tessellation,
            grid_shape=grid_shape,
            low=low,
            high=high,
            learning_rate=learning_rate,
            threshold_min=threshold_min,
            qd_offset=qd_offset,
            epsilon=float(epsilon),
        )

    @classmethod
    def grid(
        cls,
        genome_template: Any,
        dims: Sequence[int],
        low: float | Sequence[float],
        high: float | Sequence[float],
        *,
        learning_rate: float = 1.0,
        threshold_min: float = -math.inf,
        qd_offset: float = 0.0,
        extras_template: dict[str, ArrayLike] | None = None,
        epsilon: float = 1e-6,
    ) -> Archive:
        """An empty grid archive: ``dims[i]`` equal cells along descriptor dimension ``i``.

        Args:
            genome_template: ONE genome (unbatched pytree: a policy module or a vector);
                only its structure, shapes and dtypes are used, so
                ``jax.eval_shape(policy_spec.template)`` works too.
            dims: cells per descriptor dimension, e.g. ``(32, 32)``; ``k = len(dims)``.
            low: lower bound of each descriptor dimension (a scalar applies to all).
            high: upper bound of each descriptor dimension (a scalar applies to all).
            learning_rate: threshold learning rate in [0, 1] (1.0: MAP-Elites).
            threshold_min: threshold of empty cells; -inf (MAP-Elites) needs
                ``learning_rate=1``; finite for CMA-MAE.
            qd_offset: subtracted from each elite's fitness in the QD score.
            extras_template: ONE elite's extra arrays, stored beside each elite.
            epsilon: added before flooring grid coordinates, as pyribs does.

        Raises:
            ConfigError: invalid ``dims``, bounds or threshold settings.
        """
        try:
            dims_t = tuple(int(d) for d in dims)
            ok = all(int(d) == d for d in dims) and len(dims_t) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok or any(d < 1 for d in dims_t):
            raise ConfigError(
                f"dims must be a non-empty sequence of integers >= 1 (cells per descriptor "
                f"dimension), given {dims!r}; e.g. dims=(32, 32) for a 2-D grid"
            )
        if math.prod(dims_t) >= 2**31:
            raise ConfigError(f"the grid {dims_t} has more than 2**31 - 1 cells; use fewer")
        low_t, high_t = as_bounds(low, high, len(dims_t))
        dtype = _default_float()
        lower, upper = np.asarray(low_t, dtype), np.asarray(high_t, dtype)
        axes = [
            lower[i] + (np.arange(d, dtype=dtype) + 0.5) * (upper[i] - lower[i]) / d
            for i, d in enumerate(dims_t)
        ]
        centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(dims_t))
        return cls._empty(
            genome_template,
            jnp.asarray(centres, dtype),
            "grid",
            dims_t,
            low_t,
            high_t,
            learning_rate,
            threshold_min,
            qd_offset,
            extras_template,
            epsilon,
        )

    @classmethod
    def cvt(
        cls,
        genome_template: Any,
        centroids: Float[ArrayLike, "cells k"],
        low: float | Sequence[float],
        high: float | Sequence[float],
        *,
        learning_rate: float = 1.0,
        threshold_min: float = -math.inf,
        qd_offset: float = 0.0,
        extras_template: dict[str, ArrayLike] | None = None,
    ) -> Archive:
        """An empty CVT archive: one cell per centroid, a solution goes to the nearest one.

        Args:
            genome_template: ONE genome (unbatched pytree).
            centroids: ``[cells, k]`` centroids, e.g. from :func:`zoo.cvt.cvt_centroids`.
            low: lower bound of each descriptor dimension (recorded; indexing only uses
                the centroids, as in pyribs).
            high: upper bound of each descriptor dimension.
            learning_rate, threshold_min, qd_offset, extras_template: as in :meth:`grid`.

        Raises:
            ConfigError: centroids not ``[cells, k]`` with finite values, bounds of another
                length than ``k``, or invalid threshold settings.
        """
        values = np.asarray(centroids)
        if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
            raise ConfigError(
                f"centroids must be a [cells, k] array with cells, k >= 1, given shape "
                f"{values.shape}; build them with zoo.cvt.cvt_centroids(key, cells, low, high)"
            )
        if not np.all(np.isfinite(values)):
            raise ConfigError("centroids hold NaN or infinite values; pass finite centroids")
        low_t, high_t = as_bounds(low, high, values.shape[1])
        return cls._empty(
            genome_template,
            jnp.asarray(values, _default_float()),
            "cvt",
            None,
            low_t,
            high_t,
            learning_rate,
            threshold_min,
            qd_offset,
            extras_template,
        )

    # ------------------------------------------------------------------- properties

    @property
    def num_cells(self) -> int:
        """Number of cells ``cells``."""
        return self.fitness.shape[0]

    @property
    def descriptor_size(self) -> int:
        """Number of descriptor dimensions ``k``."""
        return self.centroids.shape[1]

    def elite_indices(self) -> np.ndarray:
        """Host-side: indices of the occupied cells, ascending (not jit-compatible)."""
        return np.flatnonzero(np.asarray(jax.device_get(self.occupied)))

    # --------------------------------------------------------------------- indexing

    def _check_descriptors(self, descriptors: Array, name: str = "descriptors") -> None:
        if descriptors.ndim != 2 or descriptors.shape[1] != self.descriptor_size:
            raise ShapeError(
                f"{name} must have shape [batch, {self.descriptor_size}] for this archive, "
                f"given {tuple(descriptors.shape)}; one row of {self.descriptor_size} "
                "descriptor values per solution (add a batch axis for a single one)"
            )

    @eqx.filter_jit
    def cell_index(self, descriptors: Float[ArrayLike, "batch k"]) -> Int[Array, " batch"]:
        """Cell of each descriptor vector, as pyribs computes it.

        Grid: ``clip(int((dims * (d - low) + epsilon) / (high - low)), 0, dims - 1)`` per
        dimension, raveled in C order; out-of-bounds descriptors land in edge cells. pyribs
        evaluates this in float64; a float32 archive gets the same cells, also for
        descriptors on a cell boundary (see :func:`_grid_coordinates`). CVT: the nearest
        centroid (ties: lowest index). The index of a non-finite descriptor is meaningless.

        Raises:
            ShapeError: ``descriptors`` is not ``[batch, k]`` (checked at trace time).
        """
        descriptors = jnp.asarray(descriptors)
        self._check_descriptors(descriptors)
        descriptors = descriptors.astype(self.descriptors.dtype)
        if self.tessellation == "cvt":
            return nearest_centroid(descriptors, self.centroids)
        coordinates = _grid_coordinates(
            descriptors, self.grid_shape, self.low, self.high, self.epsilon
        )
        strides = np.cumprod((1, *self.grid_shape[:0:-1]))[::-1].astype(np.int32)
        return jnp.sum(coordinates * jnp.asarray(strides), axis=-1, dtype=jnp.int32)

    # -------------------------------------------------------------------- insertion

    def _check_batch(
        self, genomes: Any, fitness: Array, descriptors: Array, extras: dict[str, Any]
    ) -> None:
        self._check_descriptors(descriptors)
        if fitness.ndim != 1 or fitness.shape[0] != descriptors.shape[0]:
            raise ShapeError(
                f"fitness must have shape [batch] = [{descriptors.shape[0]}] (one value per "
                f"row of descriptors), given {tuple(fitness.shape)}"
            )
        batch = fitness.shape[0]
        self._check_items("genomes", self.genomes, genomes, batch)
        if set(extras) != set(self.extras):
            raise ShapeError(
                f"extras must have exactly the keys the archive was built with, expected "
                f"{sorted(self.extras)}, given {sorted(extras)}; pass extras_template to "
                "Archive.grid/Archive.cvt to store extras"
            )
        for name in self.extras:
            self._check_items(f"extras[{name!r}]", self.extras[name], extras[name], batch)

    @staticmethod
    def _check_items(name: str, stored: Any, given: Any, batch: int) -> None:
        stored_def = jax.tree_util.tree_structure(stored)
        given_def = jax.tree_util.tree_structure(given)
        if stored_def != given_def:
            raise ShapeError(
                f"{name} must have the structure of the archive's template, expected "
                f"{stored_def}, given {given_def}"
            )
        for kept, new in zip(
            jax.tree_util.tree_leaves(stored), jax.tree_util.tree_leaves(given), strict=True
        ):
            if not _is_array(kept):
                continue
            shape = tuple(jnp.shape(new))
            if shape != (batch, *kept.shape[1:]):
                raise ShapeError(
                    f"every array of {name} must have shape [batch, ...] = "
                    f"{(batch, *kept.shape[1:])} (one item per solution, leading batch "
                    f"axis), given {shape}"
                )

    @eqx.filter_jit
    def insert(
        self,
        genomes: Any,
        fitness: Float[ArrayLike, " batch"],
        descriptors: Float[ArrayLike, "batch k"],
        extras: dict[str, Any] | None = None,
    ) -> tuple[Archive, InsertInfo]:
        """Insert a batch of solutions; returns the new archive and per-solution info.

        Args:
            genomes: the batch of genomes: the template's pytree with a leading ``batch``
                axis on every array leaf.
            fitness: ``[batch]`` fitness of each solution.
            descriptors: ``[batch, k]`` descriptors of each solution.
            extras: per-solution extra arrays, ``{name: [batch, ...]}``; required with
                exactly the archive's keys when it was built with ``extras_template``.

        Returns:
            ``(archive, info)``: the archive after the batch (same shapes and dtypes as
            this one) and an :class:`InsertInfo` computed against this archive.

        Raises:
            ShapeError: shapes or structures that do not match the archive (trace time).
        """
        extras = dict(extras or {})
        fitness = jnp.asarray(fitness)
        descriptors = jnp.asarray(descriptors)
        self._check_batch(genomes, fitness, descriptors, extras)
        dtype = self.fitness.dtype
        fitness = fitness.astype(dtype)
        descriptors = descriptors.astype(self.descriptors.dtype)
        batch, cells = fitness.shape[0], self.num_cells

        finite = jnp.isfinite(fitness) & jnp.all(jnp.isfinite(descriptors), axis=1)
        cell = self.cell_index(jnp.where(finite[:, None], descriptors, 0))
        current_threshold = jnp.where(
            self.occupied[cell], self.thresholds[cell], jnp.asarray(self.threshold_min, dtype)
        )
        can_insert = finite & (fitness > current_threshold)
        is_new = can_insert & ~self.occupied[cell]
        status = jnp.where(is_new, NEW_CELL, jnp.where(can_insert, IMPROVED_CELL, REJECTED))
        new_cell_baseline = 0.0 if self.threshold_min == -math.inf else self.threshold_min
        baseline = jnp.where(is_new, jnp.asarray(new_cell_baseline, dtype), current_threshold)
        improvement = jnp.where(finite, fitness - baseline, -jnp.inf)

        # Reductions per cell over the insertable solutions; the rest go to segment `cells`.
        segment = jnp.where(can_insert, cell, cells)
        best = jax.ops.segment_max(
            jnp.where(can_insert, fitness, -jnp.inf), segment, num_segments=cells + 1
        )
        order = jnp.arange(batch, dtype=jnp.int32)
        is_best = can_insert & (fitness == best[segment])
        first_best = jax.ops.segment_min(
            jnp.where(is_best, order, batch), segment, num_segments=cells + 1
        )
        winner = is_best & (first_best[segment] == order)
        count = jax.ops.segment_sum(can_insert.astype(jnp.int32), segment, num_segments=cells + 1)
        count = count[:cells]
        touched = count > 0
        if self.threshold_min == -math.inf:
            updated_thresholds = best[:cells]
        else:
            total = jax.ops.segment_sum(
                jnp.where(can_insert, fitness, 0), segment, num_segments=cells + 1
            )[:cells]
            ratio = jnp.asarray(1.0 - self.learning_rate, dtype) ** count.astype(dtype)
            mean = total / jnp.maximum(count, 1).astype(dtype)
            updated_thresholds = ratio * self.thresholds + mean * (1 - ratio)
        thresholds = jnp.where(touched, updated_thresholds, self.thresholds)

        # Winners are unique per cell; every other solution targets `cells` and is dropped.
        target = jnp.where(winner, cell, cells)

        def scatter(stored: Any, new: Any) -> Any:
            if not _is_array(stored):
                return stored
            return stored.at[target].set(jnp.asarray(new).astype(stored.dtype), mode="drop")

        archive = dataclasses.replace(
            self,
            genomes=jax.tree_util.tree_map(scatter, self.genomes, genomes),
            fitness=scatter(self.fitness, fitness),
            descriptors=scatter(self.descriptors, descriptors),
            thresholds=thresholds,
            occupied=self.occupied | touched,
            extras={
                name: jax.tree_util.tree_map(scatter, self.extras[name], extras[name])
                for name in self.extras
            },
            num_nonfinite=self.num_nonfinite + jnp.sum(~finite, dtype=jnp.int32),
        )
        info = InsertInfo(
            status=status.astype(jnp.int32),
            improvement=improvement,
            cell=jnp.where(finite, cell, -1).astype(jnp.int32),
        )
        return archive, info

    def with_elites(
        self,
        cells: Int[ArrayLike, " n"],
        genomes: Any,
        fitness: Float[ArrayLike, " n"],
        descriptors: Float[ArrayLike, "n k"],
        thresholds: Float[ArrayLike, " n"],
        extras: dict[str, ArrayLike] | None = None,
    ) -> Archive:
        """This archive with ``n`` elites stored as given in the distinct ``cells``: no
        insertion rule, no threshold update (loading a saved archive, importing another
        library's). The caller checks that each row belongs to its cell.

        Args:
            cells: ``[n]`` distinct cell indices.
            genomes: ``n`` genomes (leading axis ``n`` on every leaf).
            fitness, descriptors, thresholds: ``[n]``, ``[n, k]``, ``[n]``.
            extras: ``{name: [n, ...]}`` for each of the archive's extras (default: none).
        """
        idx = jnp.asarray(cells)

        def put(full: Array, rows: ArrayLike) -> Array:
            return full.at[idx].set(jnp.asarray(rows, full.dtype))

        return dataclasses.replace(
            self,
            genomes=jax.tree_util.tree_map(put, self.genomes, genomes),
            fitness=put(self.fitness, fitness),
            descriptors=put(self.descriptors, descriptors),
            thresholds=put(self.thresholds, thresholds),
            occupied=self.occupied.at[idx].set(True),
            extras={k: put(v, extras[k]) for k, v in self.extras.items()}
            if extras
            else self.extras,
        )

    # ---------------------------------------------------------------------- queries

    @eqx.filter_jit
    def metrics(self) -> dict[str, Array]:
        """Summary numbers, as jnp scalars (jit-friendly).

        Returns:
            ``qd_score`` (sum over elites of ``fitness - qd_offset``), ``coverage`` (elites /
            cells), ``max_fitness`` and ``mean_fitness`` (over elites; NaN for an empty
            archive, where they are undefined), ``num_elites`` and ``num_nonfinite``
            (int32). With ``learning_rate < 1`` these describe the current, non-elitist
            content.
        """
        dtype = self.fitness.dtype
        num_elites = jnp.sum(self.occupied, dtype=jnp.int32)
        nonempty = num_elites > 0
        total = jnp.sum(jnp.where(self.occupied, self.fitness, 0))
        return {
            "qd_score": jnp.sum(jnp.where(self.occupied, self.fitness - self.qd_offset, 0)),
            "coverage": (num_elites / self.num_cells).astype(dtype),
            "max_fitness": jnp.where(
                nonempty, jnp.max(jnp.where(self.occupied, self.fitness, -jnp.inf)), jnp.nan
            ),
            "mean_fitness": jnp.where(
                nonempty, total / jnp.maximum(num_elites, 1).astype(dtype), jnp.nan
            ),
            "num_elites": num_elites,
            "num_nonfinite": self.num_nonfinite,
        }

    @eqx.filter_jit
    def sample(self, key: PRNGKeyArray, n: int) -> tuple[Any, Int[Array, " n"]]:
        """``n`` elites drawn uniformly over occupied cells, with replacement.

        Returns:
            ``(genomes, cells)``: the genomes with a leading ``n`` axis and their ``[n]``
            cell indices. On an empty archive the cells are -1 and the genomes zeros.
        """
        occupied_so_far = jnp.cumsum(self.occupied, dtype=jnp.int32)  # [cells]
        num_elites = occupied_so_far[-1]
        rank = jax.random.randint(key, (n,), 0, jnp.maximum(num_elites, 1))
        # The rank-th occupied cell is the first whose running count exceeds rank.
        cells = jnp.searchsorted(occupied_so_far, rank, side="right").astype(jnp.int32)
        cells = jnp.minimum(cells, self.num_cells - 1)
        genomes = jax.tree_util.tree_map(lambda x: x[cells] if _is_array(x) else x, self.genomes)
        return genomes, jnp.where(num_elites > 0, cells, -1)

    @eqx.filter_jit
    def nearest(self, descriptors: Float[ArrayLike, "batch k"]) -> Int[Array, " batch"]:
        """Cell of the elite whose stored descriptors are nearest (Euclidean) to each row.

        Ties go to the lowest cell index; -1 for every row when the archive is empty.

        Raises:
            ShapeError: ``descriptors`` is not ``[batch, k]`` (checked at trace time).
        """
        descriptors = jnp.asarray(descriptors)
        self._check_descriptors(descriptors)
        descriptors = descriptors.astype(self.descriptors.dtype)
        cells = nearest_centroid(descriptors, self.descriptors, self.occupied)
        return jnp.where(jnp.any(self.occupied), cells, -1)


# ---------------------------------------------------------------- grid coordinates


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``a + b`` as ``(sum, error)`` with ``sum + error`` exact (Knuth's TwoSum)."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


def _exact_product_terms(integer: Array, value: Array) -> list[Array]:
    """``integer * value`` (float32, ``|integer| < 2**24``) as four exact float32 terms.

    Both factors are cut into halves of at most 12 significant bits (the float by masking
    its low 12 mantissa bits), so each partial product fits a float32 mantissa exactly.
    """
    integer_high = jnp.floor(integer / 4096.0) * 4096.0
    integer_low = integer - integer_high
    bits = jax.lax.bitcast_convert_type(value, jnp.uint32)
    value_high = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    value_low = value - value_high
    return [
        integer_high * value_high,
        integer_high * value_low,
        integer_low * value_high,
        integer_low * value_low,
    ]


def _sign_of_sum(terms: list[Array]) -> Array:
    """Sign of the exact sum of float32 terms (compensated summation, ~float64 accuracy)."""
    total, compensation = terms[0], jnp.zeros_like(terms[0])
    for term in terms[1:]:
        total, error = _two_sum(total, term)
        compensation = compensation + error
    return jnp.sign(total + compensation)


def _float32_parts(value: Fraction, count: int = 3) -> np.ndarray:
    """``count`` float32 numbers whose exact sum is ``value`` to ~``24 * count`` bits."""
    parts = []
    for _ in range(count):
        part = np.float32(float(value))
        parts.append(part)
        value -= Fraction(float(part))
    return np.array(parts, np.float32)


def _grid_coordinates(
    descriptors: Float[Array, "batch k"],
    grid_shape: tuple[int, ...],
    low: tuple[float, ...],
    high: tuple[float, ...],
    epsilon: float,
) -> Int[Array, "batch k"]:
    """Per-dimension grid coordinate ``clip(int((D*(d - lo) + eps) / I), 0, D - 1)``.

    This is pyribs' ``GridArchive.index_of`` with its default float64 dtype: ``lo``,
    ``I = hi - lo`` and ``eps`` are float64 numbers. A float64 archive evaluates the formula
    as written. A float32 archive first estimates ``j`` in float32, which can be off by one
    next to a cell boundary (e.g. ``0.78`` with 50 cells on [0, 1]), then corrects it with
    the exact signs of ``D*d - D*lo + eps - j*I`` and of the same for ``j + 1``: the
    coordinate is the largest ``j`` whose sign is not negative. Products are split into
    exact float32 terms and the float64 constants into three float32 parts each, so the
    signs are those of the real numbers, and a float32 archive agrees with float64 pyribs
    (and with itself under ``jax_enable_x64``) except within float64 rounding of a boundary.
    """
    dtype = descriptors.dtype
    dims = jnp.asarray(grid_shape, dtype)
    lower = jnp.asarray(low, dtype)
    interval = jnp.asarray(high, dtype) - lower
    # Clamping far-away descriptors changes no clipped coordinate and keeps products finite.
    descriptors = jnp.clip(descriptors, lower - interval, lower + 2 * interval)
    estimate = jnp.floor((dims * (descriptors - lower) + epsilon) / interval)
    if dtype == jnp.float32 and max(grid_shape) < 2**22:
        estimate = jnp.clip(estimate, -1, dims)
        # Static float64 constants per dimension: eps - D*lo, and I, as float32 parts.
        constant = np.stack(
            [
                _float32_parts(Fraction(float(epsilon)) - d * Fraction(float(lo)))
                for d, lo in zip(grid_shape, low, strict=True)
            ],
            axis=1,
        )  # [3, k]
        widths = np.stack(
            [
                _float32_parts(Fraction(float(hi) - float(lo)))
                for lo, hi in zip(low, high, strict=True)
            ],
            axis=1,
        )  # [3, k]
        scaled = _exact_product_terms(dims, descriptors)
        shifts = [jnp.broadcast_to(jnp.asarray(c), descriptors.shape) for c in constant]

        def sign_at(j: Array) -> Array:
            cut = [
                -t for w in widths for t in _exact_product_terms(j, jnp.broadcast_to(w, j.shape))
            ]
            return _sign_of_sum([*scaled, *shifts, *cut])

        estimate = estimate - (sign_at(estimate) < 0) + (sign_at(estimate + 1) >= 0)
    # Clipping before the cast keeps huge values from overflowing int32.
    return jnp.clip(estimate, 0, dims - 1).astype(jnp.int32)
