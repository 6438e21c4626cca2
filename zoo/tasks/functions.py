"""Benchmark functions of the CMA-ME / CMA-MAE / DQD papers: planar arm and LP-sphere.

Genomes are plain vectors ``[batch, n]``; an "episode" is one evaluation
(``episode_length = 1``). Both functions are differentiable: :meth:`objective` maps one
genome to ``(fitness, descriptors)`` and can be given to ``jax.grad`` / ``jax.jacrev``
(CMA-MEGA uses the exact gradients).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from models.policy import PolicySpec
from zoo.errors import ConfigError, ShapeError, TaskMismatchError
from zoo.tasks.base import Evaluation, Task, TaskSpec, Transitions


class VectorTask(Task):
    """Common part of the vector-genome tasks.

    Subclasses set ``spec``, ``genome_low`` / ``genome_high`` (the range
    :meth:`init_genomes` samples from) and implement :meth:`objective`.
    """

    genome_low: float
    genome_high: float

    def objective(self, genome: Float[Array, " n"]) -> tuple[Float[Array, ""], Float[Array, "2"]]:
        """Fitness and descriptors of ONE genome ``[n]``."""
        raise NotImplementedError

    def init_genomes(
        self, key: PRNGKeyArray, size: int, policy: PolicySpec | None = None
    ) -> Float[Array, "size n"]:
        """``size`` genomes drawn uniformly in ``[genome_low, genome_high]^n``."""
        if policy is not None:
            raise TaskMismatchError(
                f"task {self.spec.name!r} evolves plain vectors of size "
                f"{self.spec.genome_size}, not policies; call init_genomes without a policy spec"
            )
        n = self.spec.genome_size
        assert n is not None
        return jax.random.uniform(key, (size, n), minval=self.genome_low, maxval=self.genome_high)

    def evaluate(
        self, genomes: Float[Array, "batch n"], key: PRNGKeyArray, *, transitions: bool = False
    ) -> Evaluation:
        """Fitness ``[B]`` and descriptors ``[B, 2]`` of ``B`` genomes ``[B, n]``.

        ``key`` is unused (the functions are deterministic). The transitions, if asked
        for, are those of a one-step episode that ends by itself (a bandit): no
        observation (``observations`` and ``next_observations`` ``[B, 1, 0]``), the genome
        as action (``[B, 1, n]``), the fitness as reward (``[B, 1]``), ``terminated`` and
        ``valid`` True, ``truncated`` False (nothing follows the step, nothing is
        bootstrapped from it).
        """
        genomes = jnp.asarray(genomes)
        n = self.spec.genome_size
        if genomes.ndim != 2 or genomes.shape[1] != n:
            raise ShapeError(
                f"task {self.spec.name!r} evaluates genomes of shape [batch, {n}], got "
                f"{genomes.shape}; add a batch axis with genome[None] or check the task's "
                "dimension override"
            )
        fitness, descriptors = jax.vmap(self.objective)(genomes)
        steps = None
        if transitions:
            batch = genomes.shape[0]
            nothing = jnp.zeros((batch, 1, 0), genomes.dtype)
            steps = Transitions(
                observations=nothing,
                actions=genomes[:, None, :],
                rewards=fitness[:, None],
                next_observations=nothing,
                terminated=jnp.ones((batch, 1), bool),
                truncated=jnp.zeros((batch, 1), bool),
                valid=jnp.ones((batch, 1), bool),
            )
        return Evaluation(fitness, descriptors, steps)


class ArmTask(VectorTask):
    """Planar arm with ``n`` revolute joints and links of length 1.

    Genome: the joint angles ``theta`` ``[n]``. Fitness: ``(1 - Var(theta)) * 100`` (at most
    100, reached by any arm with equal angles; negative when the variance exceeds 1).
    Descriptors: the end effector
    ``(sum_i cos(sum_{j<=i} theta_j), sum_i sin(sum_{j<=i} theta_j))`` in ``[-n, n]^2``.
    :meth:`init_genomes` samples angles uniformly in ``[-pi, pi]``.

    Args:
        name: registry name.
        num_joints: ``n`` (100 in the CMA-ME / CMA-MAE papers).
    """

    genome_low = -math.pi
    genome_high = math.pi

    def __init__(self, name: str, num_joints: int = 100) -> None:
        if int(num_joints) < 1:
            raise ConfigError(f"task {name!r}: num_joints must be >= 1, got {num_joints}")
        n = int(num_joints)
        self.num_joints = n
        self.spec = TaskSpec(
            name=name,
            kwargs={"num_joints": n},
            genome="vector",
            genome_size=n,
            descriptor_names=("x_end_effector", "y_end_effector"),
            descriptor_low=(-float(n), -float(n)),
            descriptor_high=(float(n), float(n)),
            episode_length=1,
            qd_offset=0.0,
            reset="deterministic",
            max_fitness=100.0,
        )

    def objective(self, genome: Float[Array, " n"]) -> tuple[Float[Array, ""], Float[Array, "2"]]:
        """``((1 - Var(theta)) * 100, end effector (x, y))`` for one arm."""
        fitness = (1.0 - jnp.var(genome)) * 100.0
        cumulative = jnp.cumsum(genome)
        end = jnp.stack([jnp.sum(jnp.cos(cumulative)), jnp.sum(jnp.sin(cumulative))])
        return fitness, end


class LinearProjectionSphereTask(VectorTask):
    """Shifted sphere with linear-projection measures (the CMA-ME benchmark).

    With ``s = 2.048`` (40% of 5.12) and ``raw = sum_i (x_i - s)^2``, the fitness is
    ``100 * (raw - worst) / (0 - worst)`` where ``worst = n * (-5.12 - s)^2``: 100 at
    ``x = s``, 0 at the worst corner of ``[-5.12, 5.12]^n`` (it falls below 0 only
    outside that box). Descriptors: the sums of ``clip(x_i)`` over the first and the
    second half of ``x``, with ``clip(v) = v`` for ``|v| <= 5.12`` and ``5.12 / v``
    otherwise; each lies in ``[-5.12 n / 2, 5.12 n / 2]``. :meth:`init_genomes` samples
    uniformly in ``[-5.12, 5.12]^n``.

    Args:
        name: registry name.
        dimension: ``n``, even (100 in the CMA-ME / CMA-MAE papers).
    """

    bound = 5.12
    shift = 0.4 * 5.12
    genome_low = -5.12
    genome_high = 5.12

    def __init__(self, name: str, dimension: int = 100) -> None:
        n = int(dimension)
        if n < 2 or n % 2:
            raise ConfigError(
                f"task {name!r}: dimension must be an even number >= 2 (the two measures "
                f"sum one half each), got {dimension}"
            )
        self.dimension = n
        half = self.bound * n / 2
        self.spec = TaskSpec(
            name=name,
            kwargs={"dimension": n},
            genome="vector",
            genome_size=n,
            descriptor_names=("projection_first_half", "projection_second_half"),
            descriptor_low=(-half, -half),
            descriptor_high=(half, half),
            episode_length=1,
            qd_offset=0.0,
            reset="deterministic",
            min_fitness=0.0,
            max_fitness=100.0,
        )

    def objective(self, genome: Float[Array, " n"]) -> tuple[Float[Array, ""], Float[Array, "2"]]:
        """``(normalised sphere fitness, (projection of first half, of second half))``."""
        n = self.dimension
        raw = jnp.sum(jnp.square(genome - self.shift))
        worst = n * (-self.bound - self.shift) ** 2
        fitness = 100.0 * (1.0 - raw / worst)
        inside = jnp.abs(genome) <= self.bound
        # Avoid 5.12 / 0 in the unused branch (keeps gradients finite).
        safe = jnp.where(inside, 1.0, genome)
        clipped = jnp.where(inside, genome, self.bound / safe)
        descriptors = jnp.stack([jnp.sum(clipped[: n // 2]), jnp.sum(clipped[n // 2 :])])
        return fitness, descriptors
