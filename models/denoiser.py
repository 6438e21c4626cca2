"""Conditional latent denoiser (epsilon prediction) and its condition encoders.

The latents of :class:`~models.policy_vae.PolicyVAE` are vectors with no spatial structure, so
the denoiser is a residual MLP rather than a convolutional UNet:

``x [latent] -> Linear -> num_blocks x (ResidualBlock(time) -> CrossAttention(condition))
-> LayerNorm -> SiLU -> Linear -> eps [latent]``

- time: sinusoidal embedding of the (possibly fractional) step index, then an MLP; each
  residual block is modulated by it (scale and shift after its first normalisation). The
  mean of the condition tokens, projected, is added to the time embedding.
- condition: a set of tokens ``[n_tokens, condition_size]`` (from :class:`MeasureEncoder`,
  :class:`TextConditionEncoder`, both concatenated, or text-embedding tokens with an optional
  mask); the hidden vector attends to them (one query token, multi-head) in every
  cross-attention block.
- ``null_condition``: learned tokens that replace the condition for classifier-free
  guidance (the training loss drops the condition to them with a small probability).

Output layers of every residual branch and the final layer start at zero, so an untrained
denoiser predicts ``eps = 0``.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray


def timestep_embedding(
    t: Float[Array, ""], size: int, max_period: float = 10_000.0
) -> Float[Array, " size"]:
    """Sinusoidal embedding ``[cos(t f_k), sin(t f_k)]`` of a scalar step index ``t``."""
    half = size // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
    angles = jnp.asarray(t, jnp.float32) * frequencies
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)])


def _zero_linear(linear: eqx.nn.Linear) -> eqx.nn.Linear:
    zeros = (jnp.zeros_like(linear.weight), jnp.zeros_like(linear.bias))
    return eqx.tree_at(lambda layer: (layer.weight, layer.bias), linear, zeros)


class MeasureEncoder(eqx.Module):
    """Measures ``[k]`` -> condition tokens ``[num_tokens, token_size]`` (an MLP, reshaped).

    With ``frequencies > 0`` the MLP sees Fourier features of the measures (expected in
    ``[0, 1]``) next to the measures themselves: ``sin`` and ``cos`` of ``2 pi 2^j m`` for
    ``j < frequencies``. An archive's neighbouring cells can hold unrelated policies, so the map
    from measures to latents varies on the scale of one cell; a plain MLP of ``k`` numbers
    learns such a map very slowly, Fourier features make it easy (``2^(frequencies - 1)``
    periods over the range should exceed the cells per dimension).
    """

    mlp: eqx.nn.MLP
    norm: eqx.nn.LayerNorm
    num_tokens: int = eqx.field(static=True)
    token_size: int = eqx.field(static=True)
    frequencies: int = eqx.field(static=True)

    def __init__(
        self,
        measure_size: int,
        *,
        num_tokens: int = 4,
        token_size: int = 64,
        width: int = 128,
        frequencies: int = 0,
        key: PRNGKeyArray,
    ):
        inputs = measure_size * (1 + 2 * frequencies)
        self.mlp = eqx.nn.MLP(
            inputs, num_tokens * token_size, width, depth=2, activation=jax.nn.silu, key=key
        )
        self.norm = eqx.nn.LayerNorm(token_size)
        self.num_tokens = num_tokens
        self.token_size = token_size
        self.frequencies = frequencies

    @property
    def measure_size(self) -> int:
        """``k``, the number of measures it encodes."""
        return self.mlp.in_size // (1 + 2 * self.frequencies)

    def features(self, measures: Float[Array, " k"]) -> Float[Array, " features"]:
        """The MLP's input: the measures, then their Fourier features."""
        if self.frequencies == 0:
            return measures
        angles = 2 * jnp.pi * (2.0 ** jnp.arange(self.frequencies))[:, None] * measures[None]
        return jnp.concatenate([measures, jnp.sin(angles).reshape(-1), jnp.cos(angles).reshape(-1)])

    def __call__(self, measures: Float[Array, " k"]) -> Float[Array, "tokens size"]:
        tokens = self.mlp(self.features(measures)).reshape(self.num_tokens, self.token_size)
        return jax.vmap(self.norm)(tokens)


class TextConditionEncoder(eqx.Module):
    """A sentence embedding ``[embedding]`` -> condition tokens ``[num_tokens, token_size]``.

    The embedding is the frozen sentence encoder's pooled, unit-norm vector
    (:class:`~models.text_encoder.SentenceEncoder`, 384 numbers for all-MiniLM-L6-v2); this
    small trainable MLP (as :class:`MeasureEncoder`, without Fourier features) maps it to
    tokens the denoiser attends to. The sentence encoder itself is never trained.
    """

    mlp: eqx.nn.MLP
    norm: eqx.nn.LayerNorm
    num_tokens: int = eqx.field(static=True)
    token_size: int = eqx.field(static=True)

    def __init__(
        self,
        embedding_size: int = 384,
        *,
        num_tokens: int = 4,
        token_size: int = 64,
        width: int = 128,
        key: PRNGKeyArray,
    ):
        self.mlp = eqx.nn.MLP(
            embedding_size, num_tokens * token_size, width, depth=2, activation=jax.nn.silu,
            key=key,
        )  # fmt: skip
        self.norm = eqx.nn.LayerNorm(token_size)
        self.num_tokens = num_tokens
        self.token_size = token_size

    @property
    def embedding_size(self) -> int:
        """The size of the sentence embeddings it encodes."""
        return int(self.mlp.in_size)

    @property
    def config(self) -> dict[str, int]:
        """Keyword arguments that rebuild it: ``TextConditionEncoder(key=k, **config)``."""
        return {
            "embedding_size": self.embedding_size,
            "num_tokens": int(self.num_tokens),
            "token_size": int(self.token_size),
            "width": int(self.mlp.width_size),
        }

    def __call__(self, embedding: Float[Array, " embedding"]) -> Float[Array, "tokens size"]:
        tokens = self.mlp(embedding).reshape(self.num_tokens, self.token_size)
        return jax.vmap(self.norm)(tokens)


class ResidualBlock(eqx.Module):
    """``h + W2 silu(norm(W1 silu(norm(h))) * (1 + scale) + shift)``, ``(scale, shift)`` from
    the time embedding."""

    norm1: eqx.nn.LayerNorm
    linear1: eqx.nn.Linear
    modulation: eqx.nn.Linear
    norm2: eqx.nn.LayerNorm
    linear2: eqx.nn.Linear

    def __init__(self, width: int, embedding_size: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(width)
        self.linear1 = eqx.nn.Linear(width, width, key=k1)
        self.modulation = eqx.nn.Linear(embedding_size, 2 * width, key=k2)
        self.norm2 = eqx.nn.LayerNorm(width, use_weight=False, use_bias=False)
        self.linear2 = _zero_linear(eqx.nn.Linear(width, width, key=k3))

    def __call__(
        self, h: Float[Array, " width"], embedding: Float[Array, " embedding"]
    ) -> Float[Array, " width"]:
        scale, shift = jnp.split(self.modulation(jax.nn.silu(embedding)), 2)
        u = self.linear1(jax.nn.silu(self.norm1(h)))
        u = self.norm2(u) * (1.0 + scale) + shift
        return h + self.linear2(jax.nn.silu(u))


class CrossAttention(eqx.Module):
    """``h + out(attention(query=norm(h), keys=values=condition tokens))``, one query token."""

    norm: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention

    def __init__(self, width: int, condition_size: int, num_heads: int, *, key: PRNGKeyArray):
        self.norm = eqx.nn.LayerNorm(width)
        attention = eqx.nn.MultiheadAttention(
            num_heads, width, condition_size, condition_size, width, use_output_bias=True, key=key
        )
        self.attention = eqx.tree_at(
            lambda a: (a.output_proj.weight, a.output_proj.bias),
            attention,
            (
                jnp.zeros_like(attention.output_proj.weight),
                jnp.zeros_like(attention.output_proj.bias),
            ),
        )

    def __call__(
        self,
        h: Float[Array, " width"],
        condition: Float[Array, "tokens condition"],
        mask: Bool[Array, " tokens"] | None = None,
    ) -> Float[Array, " width"]:
        query = self.norm(h)[None]
        attention_mask = None if mask is None else mask[None, :]
        return h + self.attention(query, condition, condition, mask=attention_mask)[0]


class ConditionalDenoiser(eqx.Module):
    """Epsilon prediction ``(x [latent], t [], condition [tokens, size]) -> eps [latent]``.

    Acts on one latent; :meth:`batched` is the ``eps_fn`` the samplers and the loss in
    :mod:`models.diffusion` expect.

    Attributes:
        null_condition: learned ``[num_condition_tokens, condition_size]`` tokens standing
            for "no condition" (classifier-free guidance).
    """

    input_layer: eqx.nn.Linear
    time_mlp: eqx.nn.MLP
    pooled_condition: eqx.nn.Linear
    blocks: tuple[ResidualBlock, ...]
    cross_attentions: tuple[CrossAttention, ...]
    output_norm: eqx.nn.LayerNorm
    output_layer: eqx.nn.Linear
    null_condition: Float[Array, "tokens condition"]
    latent_size: int = eqx.field(static=True)
    time_embedding_size: int = eqx.field(static=True)
    hyperparameters: tuple[tuple[str, Any], ...] = eqx.field(static=True)

    def __init__(
        self,
        latent_size: int = 64,
        condition_size: int = 64,
        *,
        num_condition_tokens: int = 4,
        width: int = 256,
        num_blocks: int = 3,
        num_heads: int = 4,
        time_embedding_size: int = 128,
        key: PRNGKeyArray,
    ):
        """Build a denoiser.

        Args:
            latent_size: size of the latent vector.
            condition_size: width of the condition tokens.
            num_condition_tokens: number of tokens of the learned null condition (equal to the
                number the condition encoder emits, so both can be swapped under ``where``).
            width: hidden width of the residual MLP.
            num_blocks: residual blocks, each followed by a cross-attention block.
            num_heads: attention heads (must divide ``width``).
            time_embedding_size: size of the sinusoidal time embedding and of the time MLP.
            key: PRNG key.
        """
        if width % num_heads:
            raise ValueError(
                f"width ({width}) must be divisible by num_heads ({num_heads}); change one"
            )
        keys = list(jax.random.split(key, 2 * num_blocks + 5))
        self.latent_size = latent_size
        self.time_embedding_size = time_embedding_size
        self.hyperparameters = tuple(
            dict(
                latent_size=latent_size,
                condition_size=condition_size,
                num_condition_tokens=num_condition_tokens,
                width=width,
                num_blocks=num_blocks,
                num_heads=num_heads,
                time_embedding_size=time_embedding_size,
            ).items()
        )
        self.input_layer = eqx.nn.Linear(latent_size, width, key=keys.pop())
        self.time_mlp = eqx.nn.MLP(
            time_embedding_size,
            time_embedding_size,
            time_embedding_size,
            depth=1,
            activation=jax.nn.silu,
            key=keys.pop(),
        )
        self.pooled_condition = eqx.nn.Linear(condition_size, time_embedding_size, key=keys.pop())
        self.blocks = tuple(
            ResidualBlock(width, time_embedding_size, key=keys.pop()) for _ in range(num_blocks)
        )
        self.cross_attentions = tuple(
            CrossAttention(width, condition_size, num_heads, key=keys.pop())
            for _ in range(num_blocks)
        )
        self.output_norm = eqx.nn.LayerNorm(width)
        self.output_layer = _zero_linear(eqx.nn.Linear(width, latent_size, key=keys.pop()))
        self.null_condition = 0.02 * jax.random.normal(
            keys.pop(), (num_condition_tokens, condition_size)
        )

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild it: ``ConditionalDenoiser(key=k, **config)``."""
        return dict(self.hyperparameters)

    def __call__(
        self,
        x: Float[Array, " latent"],
        t: Float[Array, ""],
        condition: Float[Array, "tokens condition"],
        condition_mask: Bool[Array, " tokens"] | None = None,
    ) -> Float[Array, " latent"]:
        """Predicted noise of one noisy latent ``x`` at step index ``t`` given ``condition``.

        ``condition_mask`` (``True`` = attend) masks padding tokens of a text condition; the
        pooled condition then averages the unmasked tokens only.
        """
        if condition_mask is None:
            pooled = condition.mean(axis=0)
        else:
            weights = condition_mask.astype(condition.dtype)
            pooled = weights @ condition / jnp.maximum(weights.sum(), 1.0)
        embedding = self.time_mlp(timestep_embedding(t, self.time_embedding_size))
        embedding = embedding + self.pooled_condition(pooled)
        h = self.input_layer(x)
        for block, attention in zip(self.blocks, self.cross_attentions, strict=True):
            h = attention(block(h, embedding), condition, condition_mask)
        return self.output_layer(jax.nn.silu(self.output_norm(h)))

    def batched(
        self,
        x: Float[Array, "batch latent"],
        t: Float[Array, ""] | Float[Array, " batch"],
        condition: Float[Array, "batch tokens condition"]
        | tuple[Float[Array, "batch tokens condition"], Bool[Array, "batch tokens"]],
    ) -> Float[Array, "batch latent"]:
        """``eps_fn`` over a batch: ``t`` shared (scalar) or per row ``[batch]``.

        ``condition`` is the tokens, or a ``(tokens, mask)`` pair for padded text tokens (then
        the null condition to pair with it is ``(null_condition, all-True mask)``).
        """
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        if isinstance(condition, tuple):
            tokens, mask = condition
            return jax.vmap(self)(x, t, tokens, mask)
        return jax.vmap(self)(x, t, condition)


__all__ = [
    "ConditionalDenoiser",
    "CrossAttention",
    "MeasureEncoder",
    "ResidualBlock",
    "TextConditionEncoder",
    "timestep_embedding",
]
