"""Policy VAE: per-tensor encoder, graph-hypernetwork decoder, and its loss.

A policy of a fixed :class:`~models.policy.PolicySpec` is encoded to a Gaussian over a latent
*vector* of ``latent_size`` numbers (64 by default; reshape to ``4x4x4`` if a spatial view is
wanted, the models here never need one) and decoded back to an :class:`MLPPolicy` with
exactly the spec's shapes.

The tensors the VAE sees are :class:`PolicyParameters`: the weight matrices and biases, and
when the spec has an observation normaliser its mean and *log* standard deviation. With
*archive normalisation* each scalar is first standardised by its mean and standard deviation
over an archive, so the VAE models residuals around the archive mean; the statistics are
stored as plain flat arrays in :class:`PolicyVAE` (see :meth:`PolicyVAE.with_archive_statistics`).

Encoder (:class:`PolicyEncoder`): one feature extractor per tensor. Each ``[out, in]`` weight
matrix is a one-channel image through a small CNN (3x3 conv, group norm, ReLU, 2x2 max-pool,
3x3 conv, group norm, ReLU, adaptive max-pool to a fixed ``grid x grid``), so any matrix size
works; bias and normaliser vectors go through 3-layer MLPs of width 64. The features are
concatenated and projected to the latent mean and log-variance.

Decoder (:class:`PolicyDecoder`): a graph hypernetwork on the neuron graph of the spec. Nodes
are the neurons of the layers ``(observation, *hidden, action)``; node ``i`` starts from a
learned embedding ``e_i`` and the state ``h_i = MLP([e_i, z])``. A few rounds of gated message
passing follow: every node receives an attention-weighted message from the previous layer
(its in-neighbours) and one from the next layer (its out-neighbours), and a shared GRU cell
updates its state. Heads then emit ``W[o, i] = head_l(h_o, h_i)`` for every edge of layer ``l``
and ``b[o] = bias_head_l(h_o)`` for every neuron. Each dense layer also has a *basis head*: an
MLP of ``z`` and the mean states of the layer's two node layers gives ``basis_size``
coefficients of a learned basis of the layer's whole weight matrix and bias (the layer-level
decoder of GHN-style hypernetworks). The basis can start from the archive's principal
directions (:meth:`PolicyVAE.with_archive_basis`); it is what lets the decoder reproduce an
archive's policies precisely enough for their rollouts to survive (a walker's gait changes
under parameter errors of a few percent of the archive's spread). ``basis_size=0`` leaves only
the neuron-level heads. A separate MLP decodes the normaliser mean and log-std from ``z``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from models.policy import MLPPolicy, PolicySpec


class PolicyParameters(NamedTuple):
    """The tensors of one policy as the VAE sees them.

    Attributes:
        weights: per layer ``[out, in]``.
        biases: per layer ``[out]``.
        obs_mean: ``[obs]`` or ``None`` when the spec has no normaliser.
        obs_log_std: ``[obs]`` (log of the normaliser's std) or ``None``.
    """

    weights: tuple[Float[Array, "out in"], ...]
    biases: tuple[Float[Array, " out"], ...]
    obs_mean: Float[Array, " obs"] | None
    obs_log_std: Float[Array, " obs"] | None


def policy_to_parameters(policy: MLPPolicy) -> PolicyParameters:
    """The VAE's view of ``policy`` (normaliser std as its log)."""
    log_std = None if policy.obs_std is None else jnp.log(policy.obs_std)
    return PolicyParameters(tuple(policy.weights), tuple(policy.biases), policy.obs_mean, log_std)


def parameters_to_policy(parameters: PolicyParameters, spec: PolicySpec) -> MLPPolicy:
    """Inverse of :func:`policy_to_parameters`: an :class:`MLPPolicy` of ``spec``."""
    obs_std = None if parameters.obs_log_std is None else jnp.exp(parameters.obs_log_std)
    return MLPPolicy(
        weights=tuple(parameters.weights),
        biases=tuple(parameters.biases),
        obs_mean=parameters.obs_mean,
        obs_std=obs_std,
        activation=spec.activation,
        output_activation=spec.output_activation,
    )


def archive_statistics(
    policies: MLPPolicy, min_std: float = 1e-4
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Per-scalar mean and std of a stacked population, over the VAE's parameter vector.

    Args:
        policies: an :class:`MLPPolicy` with a leading batch axis ``[M, ...]`` on every leaf.
        min_std: floor on the std (scalars constant over the archive would divide by zero).

    Returns:
        ``(mean, std)``, each ``[n]`` with ``n = spec.num_parameters``, ordered as
        ``ravel_pytree(PolicyParameters)``.
    """
    flat = jax.vmap(lambda p: ravel_pytree(policy_to_parameters(p))[0])(policies)
    return flat.mean(axis=0), jnp.maximum(flat.std(axis=0), min_std)


def adaptive_max_pool(x: Float[Array, "c h w"], grid: int) -> Float[Array, "c grid grid"]:
    """Max-pool ``x`` to ``grid x grid`` cells for any ``h, w`` (cells repeat when ``h < grid``)."""

    def bins(size: int) -> list[tuple[int, int]]:
        return [
            ((i * size) // grid, max((i * size) // grid + 1, -(-((i + 1) * size) // grid)))
            for i in range(grid)
        ]

    rows = jnp.stack([x[:, a:b, :].max(axis=1) for a, b in bins(x.shape[1])], axis=1)
    return jnp.stack([rows[:, :, a:b].max(axis=2) for a, b in bins(x.shape[2])], axis=2)


class MatrixEncoder(eqx.Module):
    """Small CNN over one ``[out, in]`` weight matrix seen as a 1-channel image.

    3x3 conv -> group norm -> ReLU -> 2x2 max-pool (per axis, only where the axis is at least
    ``2 * grid`` long) -> 3x3 conv -> group norm -> ReLU -> adaptive max-pool to
    ``grid x grid`` -> flatten to ``channels[1] * grid**2`` features, followed by the matrix's
    mean and standard deviation (which the normalisation layers would otherwise hide).
    """

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    pool: eqx.nn.MaxPool2d
    grid: int = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        channels: tuple[int, int] = (8, 16),
        grid: int = 4,
        key: PRNGKeyArray,
    ):
        k1, k2 = jax.random.split(key)
        c1, c2 = channels
        self.conv1 = eqx.nn.Conv2d(1, c1, 3, padding=1, key=k1)
        self.norm1 = eqx.nn.GroupNorm(min(4, c1), c1)
        self.conv2 = eqx.nn.Conv2d(c1, c2, 3, padding=1, key=k2)
        self.norm2 = eqx.nn.GroupNorm(min(4, c2), c2)
        kernel = tuple(2 if size >= 2 * grid else 1 for size in shape)
        self.pool = eqx.nn.MaxPool2d(kernel, stride=kernel)
        self.grid = grid

    @property
    def num_features(self) -> int:
        return self.conv2.out_channels * self.grid**2 + 2

    def __call__(self, matrix: Float[Array, "out in"]) -> Float[Array, " features"]:
        x = jax.nn.relu(self.norm1(self.conv1(matrix[None])))
        x = self.pool(x)
        x = jax.nn.relu(self.norm2(self.conv2(x)))
        pooled = adaptive_max_pool(x, self.grid).reshape(-1)
        return jnp.concatenate([pooled, jnp.stack([matrix.mean(), matrix.std()])])


def _vector_mlp(size: int, width: int, *, key: PRNGKeyArray) -> eqx.nn.MLP:
    """3 linear layers ``size -> width -> width -> width`` with ReLU between."""
    return eqx.nn.MLP(size, width, width, depth=2, activation=jax.nn.relu, key=key)


class PolicyEncoder(eqx.Module):
    """``PolicyParameters -> (mean, log_var)`` of a diagonal Gaussian over ``[latent]``."""

    weight_encoders: tuple[MatrixEncoder, ...]
    bias_encoders: tuple[eqx.nn.MLP, ...]
    obs_mean_encoder: eqx.nn.MLP | None
    obs_log_std_encoder: eqx.nn.MLP | None
    basis_projections: tuple[Float[Array, "basis params"], ...]
    projection: eqx.nn.MLP
    latent_size: int = eqx.field(static=True)

    def __init__(
        self,
        spec: PolicySpec,
        *,
        latent_size: int = 64,
        cnn_channels: tuple[int, int] = (8, 16),
        cnn_grid: int = 4,
        vector_width: int = 64,
        projection_width: int = 256,
        basis_size: int = 0,
        key: PRNGKeyArray,
    ):
        sizes = spec.layer_sizes
        n_layers = len(sizes) - 1
        keys = list(jax.random.split(key, 2 * n_layers + 3))
        self.basis_projections = tuple(
            jnp.zeros((basis_size, o * i + o)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        ) if basis_size > 0 else ()  # fmt: skip
        self.weight_encoders = tuple(
            MatrixEncoder((o, i), channels=cnn_channels, grid=cnn_grid, key=keys.pop())
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.bias_encoders = tuple(_vector_mlp(o, vector_width, key=keys.pop()) for o in sizes[1:])
        if spec.normalise_observations:
            self.obs_mean_encoder = _vector_mlp(spec.observation_size, vector_width, key=keys.pop())
            self.obs_log_std_encoder = _vector_mlp(
                spec.observation_size, vector_width, key=keys.pop()
            )
        else:
            self.obs_mean_encoder = self.obs_log_std_encoder = None
        n_features = sum(e.num_features for e in self.weight_encoders)
        n_features += vector_width * (n_layers + (2 if spec.normalise_observations else 0))
        n_features += basis_size * len(self.basis_projections)
        self.projection = eqx.nn.MLP(
            n_features, 2 * latent_size, projection_width, depth=1, activation=jax.nn.silu,
            key=keys.pop(),
        )  # fmt: skip
        self.latent_size = latent_size

    def __call__(
        self, parameters: PolicyParameters
    ) -> tuple[Float[Array, " latent"], Float[Array, " latent"]]:
        features = [enc(w) for enc, w in zip(self.weight_encoders, parameters.weights, strict=True)]
        features += [enc(b) for enc, b in zip(self.bias_encoders, parameters.biases, strict=True)]
        if self.obs_mean_encoder is not None and self.obs_log_std_encoder is not None:
            features.append(self.obs_mean_encoder(parameters.obs_mean))
            features.append(self.obs_log_std_encoder(parameters.obs_log_std))
        for projection, w, b in zip(
            self.basis_projections, parameters.weights, parameters.biases, strict=False
        ):
            features.append(projection @ jnp.concatenate([w.reshape(-1), b]))
        out = self.projection(jnp.concatenate(features))
        return out[: self.latent_size], out[self.latent_size :]


class EdgeHead(eqx.Module):
    """``W[o, i] = v . silu(A h_o + B h_i + c) + d`` for every edge of one dense layer."""

    receiver: eqx.nn.Linear
    sender: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, node_size: int, width: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.receiver = eqx.nn.Linear(node_size, width, key=k1)
        self.sender = eqx.nn.Linear(node_size, width, use_bias=False, key=k2)
        self.out = eqx.nn.Linear(width, 1, key=k3)

    def __call__(
        self, receivers: Float[Array, "out node"], senders: Float[Array, "in node"]
    ) -> Float[Array, "out in"]:
        hidden = jax.vmap(self.receiver)(receivers)[:, None, :] + jax.vmap(self.sender)(senders)
        return jax.nn.silu(hidden) @ self.out.weight[0] + self.out.bias[0]


class BasisHead(eqx.Module):
    """Layer-level head: ``(W, b) = reshape(basis @ coefficients([z, mean h_out, mean h_in]))``.

    ``basis`` holds ``basis_size`` directions of the layer's flattened ``[W, b]`` (row-major
    ``W`` then ``b``); an MLP of the latent and the layer's mean node states gives their
    coefficients. The basis starts at zero (an untrained head adds nothing to the neuron-level
    heads); :meth:`PolicyVAE.with_archive_basis` sets it to the archive's principal directions,
    which lets the decoder reproduce the archive's policies far more precisely than the
    neuron-level heads alone.
    """

    coefficients: eqx.nn.MLP
    basis: Float[Array, "params basis"]
    shape: tuple[int, int] = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        node_size: int,
        latent_size: int,
        basis_size: int,
        width: int,
        *,
        key: PRNGKeyArray,
    ):
        out, inp = shape
        self.coefficients = eqx.nn.MLP(
            latent_size + 2 * node_size, basis_size, width, depth=2, activation=jax.nn.silu,
            key=key,
        )  # fmt: skip
        self.basis = jnp.zeros((out * inp + out, basis_size))
        self.shape = shape

    def __call__(
        self,
        z: Float[Array, " latent"],
        receivers: Float[Array, "out node"],
        senders: Float[Array, "in node"],
    ) -> tuple[Float[Array, "out in"], Float[Array, " out"]]:
        pooled = jnp.concatenate([z, receivers.mean(axis=0), senders.mean(axis=0)])
        flat = self.basis @ self.coefficients(pooled)
        out, inp = self.shape
        return flat[: out * inp].reshape(out, inp), flat[out * inp :]


class PolicyDecoder(eqx.Module):
    """Graph hypernetwork ``z [latent] -> PolicyParameters`` over the neuron graph of a spec.

    See the module docstring. All nodes share the initial-state, message and GRU networks;
    each dense layer has its own edge (weight) and bias head (stacked on a leading layer
    axis) and its own :class:`BasisHead` (``basis_size > 0``). Internally the layers are
    padded to the widest one, ``[layers, width, node]`` with a mask, so a message round is one
    batched attention whatever the depth.
    """

    node_embeddings: Float[Array, "nodes node"]
    initial_state: eqx.nn.MLP
    forward_attention: eqx.nn.MultiheadAttention
    backward_attention: eqx.nn.MultiheadAttention
    gru: eqx.nn.GRUCell
    edge_heads: EdgeHead
    bias_heads: eqx.nn.MLP
    basis_heads: tuple[BasisHead, ...]
    normaliser_head: eqx.nn.MLP | None
    layer_sizes: tuple[int, ...] = eqx.field(static=True)
    message_rounds: int = eqx.field(static=True)

    def __init__(
        self,
        spec: PolicySpec,
        *,
        latent_size: int = 64,
        node_size: int = 32,
        message_rounds: int = 3,
        num_heads: int = 2,
        head_width: int = 32,
        basis_size: int = 32,
        basis_width: int = 128,
        normaliser_width: int = 128,
        key: PRNGKeyArray,
    ):
        sizes = spec.layer_sizes
        n_layers = len(sizes) - 1
        keys = list(jax.random.split(key, 9))
        self.layer_sizes = sizes
        self.message_rounds = message_rounds
        self.node_embeddings = jax.random.normal(keys.pop(), (sum(sizes), node_size))
        self.initial_state = eqx.nn.MLP(
            node_size + latent_size, node_size, 2 * node_size, depth=1, activation=jax.nn.silu,
            key=keys.pop(),
        )  # fmt: skip
        self.forward_attention, self.backward_attention = (
            eqx.nn.MultiheadAttention(num_heads, node_size, use_query_bias=True, key=keys.pop())
            for _ in range(2)
        )
        self.gru = eqx.nn.GRUCell(2 * node_size, node_size, key=keys.pop())
        self.edge_heads = eqx.filter_vmap(lambda k: EdgeHead(node_size, head_width, key=k))(
            jax.random.split(keys.pop(), n_layers)
        )
        self.bias_heads = eqx.filter_vmap(
            lambda k: eqx.nn.MLP(
                node_size, "scalar", head_width, depth=1, activation=jax.nn.silu, key=k
            )
        )(jax.random.split(keys.pop(), n_layers))
        if basis_size > 0:
            self.basis_heads = tuple(
                BasisHead((out, inp), node_size, latent_size, basis_size, basis_width, key=k)
                for inp, out, k in zip(
                    sizes[:-1], sizes[1:], jax.random.split(keys.pop(), n_layers), strict=True
                )
            )
        else:
            self.basis_heads = ()
        if spec.normalise_observations:
            self.normaliser_head = eqx.nn.MLP(
                latent_size, 2 * spec.observation_size, normaliser_width, depth=2,
                activation=jax.nn.silu, key=keys.pop(),
            )  # fmt: skip
        else:
            self.normaliser_head = None

    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        """``(index [layers, width], mask [layers, width])`` of the padded node layout."""
        sizes = np.asarray(self.layer_sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        position = np.arange(sizes.max())[None, :]
        mask = position < sizes[:, None]
        return np.where(mask, offsets[:, None] + position, 0), mask

    def node_states(self, z: Float[Array, " latent"]) -> Float[Array, "layers width node"]:
        """Neuron states after message passing, padded per layer (input layer first)."""
        index, mask = self._layout()
        embeddings = self.node_embeddings[index]
        inputs = jnp.concatenate(
            [embeddings, jnp.broadcast_to(z, (*index.shape, z.shape[0]))], axis=-1
        )
        nodes = jax.vmap(jax.vmap(self.initial_state))(inputs)
        zeros = jnp.zeros_like(nodes[:1])

        def attend(attention: eqx.nn.MultiheadAttention, queries: Array, keys: Array, mask: Array):
            full_mask = jnp.broadcast_to(mask[:, None, :], (*queries.shape[:2], mask.shape[-1]))
            return jax.vmap(lambda q, k, m: attention(q, k, k, mask=m))(queries, keys, full_mask)

        def message_round(nodes: Array, _: None) -> tuple[Array, None]:
            # layer l + 1 attends to layer l (forward) and layer l to layer l + 1 (backward)
            forward = attend(self.forward_attention, nodes[1:], nodes[:-1], mask[:-1])
            backward = attend(self.backward_attention, nodes[:-1], nodes[1:], mask[1:])
            messages = jnp.concatenate(
                [jnp.concatenate([zeros, forward]), jnp.concatenate([backward, zeros])], axis=-1
            )
            return jax.vmap(jax.vmap(self.gru))(messages, nodes), None

        nodes, _ = jax.lax.scan(message_round, nodes, None, length=self.message_rounds)
        return nodes

    def __call__(self, z: Float[Array, " latent"]) -> PolicyParameters:
        nodes = self.node_states(z)
        weights_padded = eqx.filter_vmap(lambda head, r, s: head(r, s))(
            self.edge_heads, nodes[1:], nodes[:-1]
        )
        biases_padded = eqx.filter_vmap(lambda head, h: jax.vmap(head)(h))(
            self.bias_heads, nodes[1:]
        )
        sizes = self.layer_sizes
        weights = tuple(
            weights_padded[layer, :out, :inp]
            for layer, (inp, out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        biases = tuple(biases_padded[layer, :out] for layer, out in enumerate(sizes[1:]))
        if self.basis_heads:
            layers = [nodes[layer, :size] for layer, size in enumerate(sizes)]
            from_basis = [
                head(z, h_out, h_in)
                for head, h_in, h_out in zip(self.basis_heads, layers[:-1], layers[1:], strict=True)
            ]
            weights = tuple(w + dw for w, (dw, _) in zip(weights, from_basis, strict=True))
            biases = tuple(b + db for b, (_, db) in zip(biases, from_basis, strict=True))
        if self.normaliser_head is None:
            return PolicyParameters(weights, biases, None, None)
        mean, log_std = jnp.split(self.normaliser_head(z), 2)
        return PolicyParameters(weights, biases, mean, log_std)


class PolicyVAE(eqx.Module):
    """Variational auto-encoder of the policies of one :class:`PolicySpec`.

    ``encode(policy) -> (mean, log_var)`` and ``decode(z) -> MLPPolicy`` act on *one* policy /
    latent; use ``eqx.filter_vmap`` (or ``jax.vmap``) for batches.

    Attributes:
        encoder: :class:`PolicyEncoder`.
        decoder: :class:`PolicyDecoder`.
        archive_mean: ``[n]`` per-scalar mean of the archive, or ``None`` (no archive
            normalisation). Not trainable: filter it out with :meth:`trainable_filter`.
        archive_std: ``[n]`` per-scalar std of the archive, or ``None``.
        spec: the policy spec.
        latent_size: number of latent numbers.
    """

    encoder: PolicyEncoder
    decoder: PolicyDecoder
    archive_mean: Float[Array, " n"] | None
    archive_std: Float[Array, " n"] | None
    spec: PolicySpec = eqx.field(static=True)
    latent_size: int = eqx.field(static=True)
    hyperparameters: tuple[tuple[str, Any], ...] = eqx.field(static=True)

    def __init__(
        self,
        spec: PolicySpec,
        *,
        latent_size: int = 64,
        cnn_channels: tuple[int, int] = (8, 16),
        cnn_grid: int = 4,
        vector_width: int = 64,
        projection_width: int = 256,
        node_size: int = 32,
        message_rounds: int = 3,
        num_heads: int = 2,
        head_width: int = 32,
        basis_size: int = 32,
        basis_width: int = 128,
        normaliser_width: int = 128,
        archive_normalisation: bool = False,
        key: PRNGKeyArray,
    ):
        """Build a VAE for ``spec``.

        Args:
            spec: the policy spec; the decoder's graph and the encoder's extractors follow it.
            latent_size: size of the latent vector.
            cnn_channels, cnn_grid: channels of the two conv layers and side of the pooled grid
                of each :class:`MatrixEncoder`.
            vector_width: width of the 3-layer MLPs encoding bias and normaliser vectors.
            projection_width: hidden width of the features -> (mean, log_var) MLP.
            node_size: width of the decoder's node states (8-32).
            message_rounds: rounds of gated message passing.
            num_heads: attention heads of the message functions (must divide ``node_size``).
            head_width: hidden width of the neuron-level weight and bias heads.
            basis_size: size of each layer's learned weight basis (0: no basis heads).
            basis_width: hidden width of the MLPs giving the basis coefficients.
            normaliser_width: hidden width of the normaliser-decoding MLP.
            archive_normalisation: create (identity) archive statistics to be filled by
                :meth:`with_archive_statistics` or by loading saved arrays.
            key: PRNG key.
        """
        if node_size % num_heads:
            raise ValueError(
                f"node_size ({node_size}) must be divisible by num_heads ({num_heads}); "
                "change one of them"
            )
        k_enc, k_dec = jax.random.split(key)
        self.spec = spec
        self.latent_size = latent_size
        self.hyperparameters = tuple(dict(
            latent_size=latent_size, cnn_channels=tuple(cnn_channels), cnn_grid=cnn_grid,
            vector_width=vector_width, projection_width=projection_width, node_size=node_size,
            message_rounds=message_rounds, num_heads=num_heads, head_width=head_width,
            basis_size=basis_size, basis_width=basis_width, normaliser_width=normaliser_width,
        ).items())  # fmt: skip
        self.encoder = PolicyEncoder(
            spec, latent_size=latent_size, cnn_channels=cnn_channels, cnn_grid=cnn_grid,
            vector_width=vector_width, projection_width=projection_width,
            basis_size=basis_size, key=k_enc,
        )  # fmt: skip
        self.decoder = PolicyDecoder(
            spec, latent_size=latent_size, node_size=node_size, message_rounds=message_rounds,
            num_heads=num_heads, head_width=head_width, basis_size=basis_size,
            basis_width=basis_width, normaliser_width=normaliser_width, key=k_dec,
        )  # fmt: skip
        if archive_normalisation:
            self.archive_mean = jnp.zeros((spec.num_parameters,))
            self.archive_std = jnp.ones((spec.num_parameters,))
        else:
            self.archive_mean = self.archive_std = None

    # -- archive normalisation ---------------------------------------------------------------

    def with_archive_statistics(self, policies: MLPPolicy, min_std: float = 1e-4) -> PolicyVAE:
        """A copy that standardises every scalar by its mean/std over ``policies`` ``[M, ...]``."""
        mean, std = archive_statistics(policies, min_std)
        return eqx.tree_at(
            lambda v: (v.archive_mean, v.archive_std), self, (mean, std),
            is_leaf=lambda x: x is None,
        )  # fmt: skip

    def with_archive_basis(self, policies: MLPPolicy) -> PolicyVAE:
        """A copy whose basis heads start from the principal directions of ``policies``.

        For every dense layer, the layer's ``[W, b]`` of each of the ``M`` policies is
        flattened in the space the VAE models (after :meth:`normalise`: set the archive
        statistics first) and centred. The decoder's basis columns become the top
        right-singular vectors ``v_k`` scaled by ``s_k / sqrt(M)`` (coefficients of order one
        reproduce the archive's spread) and the encoder's matching projection rows become
        ``v_k / (s_k / sqrt(M))``, so the encoder sees each policy's coefficients in that basis
        directly. Directions beyond ``min(M, layer size)``, or with a negligible singular
        value, stay zero. Without basis heads the VAE is returned unchanged.
        """
        heads = self.decoder.basis_heads
        if not heads:
            return self
        parameters = jax.vmap(lambda p: self.normalise(policy_to_parameters(p)))(policies)
        bases, projections = [], []
        for head, w, b in zip(heads, parameters.weights, parameters.biases, strict=True):
            flat = jnp.concatenate([w.reshape(w.shape[0], -1), b], axis=1)
            flat = flat - flat.mean(axis=0)
            _, s, vt = jnp.linalg.svd(flat, full_matrices=False)
            k = min(head.basis.shape[1], s.shape[0])
            scale = s[:k] / math.sqrt(flat.shape[0])
            usable = scale > 1e-6 * jnp.maximum(scale[0], 1e-30)
            columns = jnp.where(usable, vt[:k].T * scale, 0.0)
            rows = jnp.where(usable[:, None], vt[:k] / jnp.where(usable, scale, 1.0)[:, None], 0.0)
            bases.append(jnp.zeros_like(head.basis).at[:, :k].set(columns))
            projections.append(jnp.zeros_like(head.basis.T).at[:k].set(rows))
        heads = tuple(
            eqx.tree_at(lambda h: h.basis, head, basis)
            for head, basis in zip(heads, bases, strict=True)
        )
        return eqx.tree_at(
            lambda v: (v.decoder.basis_heads, v.encoder.basis_projections),
            self,
            (heads, tuple(projections)),
        )

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this VAE: ``PolicyVAE(spec, key=k, **vae.config)``."""
        return {
            **dict(self.hyperparameters),
            "archive_normalisation": self.archive_mean is not None,
        }

    def trainable_filter(self) -> PyTree[bool]:
        """Filter spec for ``eqx.partition``: every inexact array except the archive statistics."""
        spec = jax.tree_util.tree_map(eqx.is_inexact_array, self)
        return eqx.tree_at(
            lambda v: (v.archive_mean, v.archive_std), spec, (False, False),
            is_leaf=lambda x: x is None,
        )  # fmt: skip

    def normalise(self, parameters: PolicyParameters) -> PolicyParameters:
        """Parameters -> the space the VAE models (identity without archive normalisation)."""
        if self.archive_mean is None or self.archive_std is None:
            return parameters
        flat, unravel = ravel_pytree(parameters)
        mean = jax.lax.stop_gradient(self.archive_mean)
        std = jax.lax.stop_gradient(self.archive_std)
        return unravel((flat - mean) / std)

    def denormalise(self, parameters: PolicyParameters) -> PolicyParameters:
        """Inverse of :meth:`normalise`."""
        if self.archive_mean is None or self.archive_std is None:
            return parameters
        flat, unravel = ravel_pytree(parameters)
        mean = jax.lax.stop_gradient(self.archive_mean)
        std = jax.lax.stop_gradient(self.archive_std)
        return unravel(flat * std + mean)

    # -- encode / decode ---------------------------------------------------------------------

    def encode(self, policy: MLPPolicy) -> tuple[Float[Array, " latent"], Float[Array, " latent"]]:
        """One policy -> ``(mean, log_var)``, each ``[latent]``."""
        return self.encoder(self.normalise(policy_to_parameters(policy)))

    def decode_parameters(self, z: Float[Array, " latent"]) -> PolicyParameters:
        """``z [latent]`` -> parameters in the normalised space (before :meth:`denormalise`)."""
        return self.decoder(z)

    def decode(self, z: Float[Array, " latent"]) -> MLPPolicy:
        """``z [latent]`` -> an :class:`MLPPolicy` with exactly the spec's shapes."""
        return parameters_to_policy(self.denormalise(self.decoder(z)), self.spec)

    def reconstruct(self, policy: MLPPolicy) -> MLPPolicy:
        """Decode the posterior mean of ``policy``."""
        return self.decode(self.encode(policy)[0])


def kl_divergence(
    mean: Float[Array, "*batch latent"], log_var: Float[Array, "*batch latent"]
) -> Float[Array, "*batch"]:
    """``KL(N(mean, exp(log_var)) || N(0, I))`` summed over the last axis."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(log_var) - 1.0 - log_var, axis=-1)


def vae_loss(
    vae: PolicyVAE,
    policies: MLPPolicy,
    key: PRNGKeyArray,
    kl_weight: float = 1e-6,
    *,
    states: Float[Array, "batch states obs"] | Float[Array, "states obs"] | None = None,
    behaviour_weight: float = 1.0,
    parameter_weight: float = 1.0,
    normaliser_weight: float = 1.0,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """VAE loss on a batch of policies ``[batch, ...]``; returns ``(loss, metrics)``.

    ``loss = parameter_weight * reconstruction + behaviour_weight * behaviour
    + kl_weight * kl`` where

    - ``reconstruction``: squared error between the decoded and the original parameters, in
      the normalised space, averaged over all scalars; the normaliser mean / log-std scalars
      count with weight ``normaliser_weight``.
    - ``behaviour`` (only when ``states`` is given): mean squared difference between the
      actions of the original and the decoded policy on ``states`` (shared ``[states, obs]``
      or per policy ``[batch, states, obs]``).
    - ``kl``: KL to the standard normal, summed over latent numbers, averaged over the batch.

    ``z`` is sampled with the reparameterisation trick. Use with
    ``eqx.filter_value_and_grad(vae_loss, has_aux=True)`` and partition with
    :meth:`PolicyVAE.trainable_filter` so the archive statistics are not trained.
    """
    batch = jax.tree_util.tree_leaves(policies)[0].shape[0]
    mean, log_var = eqx.filter_vmap(vae.encode)(policies)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    decoded = jax.vmap(vae.decode_parameters)(z)
    target = jax.vmap(lambda p: vae.normalise(policy_to_parameters(p)))(policies)

    def squared_error(a: Any, b: Any) -> tuple[Array, int]:
        pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
        errors, sizes = zip(*((jnp.sum((x - y) ** 2), x.size) for x, y in pairs), strict=True)
        return sum(errors), sum(sizes)

    err_layers, n_layers = squared_error(
        (decoded.weights, decoded.biases), (target.weights, target.biases)
    )
    err_norm, n_norm = 0.0, 0
    if decoded.obs_mean is not None:
        err_norm, n_norm = squared_error(
            (decoded.obs_mean, decoded.obs_log_std), (target.obs_mean, target.obs_log_std)
        )
    reconstruction = (err_layers + normaliser_weight * err_norm) / (n_layers + n_norm)
    kl = jnp.mean(kl_divergence(mean, log_var))
    loss = parameter_weight * reconstruction + kl_weight * kl
    metrics = {"reconstruction": reconstruction, "kl": kl}
    if states is not None:
        if states.ndim == 2:
            states = jnp.broadcast_to(states, (batch, *states.shape))
        decoded_policies = jax.vmap(lambda p: parameters_to_policy(vae.denormalise(p), vae.spec))(
            decoded
        )

        def actions(policy: MLPPolicy, obs: Array) -> Array:
            return jax.vmap(policy)(obs)

        original = eqx.filter_vmap(actions)(policies, states)
        reconstructed = eqx.filter_vmap(actions)(decoded_policies, states)
        behaviour = jnp.mean((original - reconstructed) ** 2)
        loss = loss + behaviour_weight * behaviour
        metrics["behaviour"] = behaviour
    metrics["loss"] = loss
    return loss, metrics


def count_parameters(module: Any) -> int:
    """Number of floating-point scalars in ``module`` (arrays or ``jax.ShapeDtypeStruct``
    leaves, e.g. from ``eqx.filter_eval_shape``; archive statistics included)."""
    leaves = jax.tree_util.tree_leaves(module)
    return sum(
        math.prod(x.shape)
        for x in leaves
        if hasattr(x, "dtype") and hasattr(x, "shape") and jnp.issubdtype(x.dtype, jnp.inexact)
    )


__all__ = [
    "BasisHead",
    "EdgeHead",
    "MatrixEncoder",
    "PolicyDecoder",
    "PolicyEncoder",
    "PolicyParameters",
    "PolicyVAE",
    "adaptive_max_pool",
    "archive_statistics",
    "count_parameters",
    "kl_divergence",
    "parameters_to_policy",
    "policy_to_parameters",
    "vae_loss",
]
