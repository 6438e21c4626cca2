"""A BERT sentence encoder in Equinox: the architecture of all-MiniLM-L6-v2.

BERT (word + position + token-type embeddings, post-norm transformer layers with exact-erf
GELU), then mean pooling of the token states over the attention mask and L2 normalisation,
as sentence-transformers computes all-MiniLM-L6-v2's embeddings. No I/O here:
:func:`sentence_encoder_from_tensors` builds the module from a mapping of named arrays (the
Hugging Face ``BertModel`` names); :mod:`zoo.text_encoder` reads the files and tokenises.

Every module acts on ONE sequence (``input_ids`` of shape ``[length]``); ``jax.vmap`` it over
a batch. The weights are frozen in the sense that matters: nothing here trains them. A caller
that embeds this module in a trainable model wraps its outputs in ``jax.lax.stop_gradient``
or filters it out of the optimised parameters (e.g. ``eqx.partition`` with a filter spec
that is ``False`` on this sub-tree).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The hyperparameters of a BERT encoder; the defaults are all-MiniLM-L6-v2's."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> BertConfig:
        """From a Hugging Face ``config.json`` of a ``BertModel`` (missing keys: defaults)."""
        names = {
            "vocab_size": "vocab_size",
            "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size",
            "max_positions": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size",
            "layer_norm_eps": "layer_norm_eps",
        }
        given = {ours: config[theirs] for ours, theirs in names.items() if theirs in config}
        return cls(**given)


class Dense(eqx.Module):
    """``x @ weight.T + bias`` over the last axis (the layout of ``torch.nn.Linear``)."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        return x @ self.weight.T + self.bias


class LayerNorm(eqx.Module):
    """Layer normalisation over the last axis with a learned scale and shift."""

    weight: Float[Array, " dim"]
    bias: Float[Array, " dim"]
    eps: float = eqx.field(static=True)

    def __call__(self, x: Float[Array, "... dim"]) -> Float[Array, "... dim"]:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight + self.bias


class BertEmbeddings(eqx.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm."""

    word: Float[Array, "vocab dim"]
    position: Float[Array, "positions dim"]
    token_type: Float[Array, "types dim"]
    norm: LayerNorm

    def __call__(
        self, input_ids: Int[Array, " length"], token_type_ids: Int[Array, " length"]
    ) -> Float[Array, "length dim"]:
        length = input_ids.shape[0]
        x = self.word[input_ids] + self.position[:length] + self.token_type[token_type_ids]
        return self.norm(x)


class BertLayer(eqx.Module):
    """One post-norm transformer layer: self-attention, add & norm, GELU MLP, add & norm."""

    query: Dense
    key: Dense
    value: Dense
    attention_output: Dense
    attention_norm: LayerNorm
    intermediate: Dense
    output: Dense
    output_norm: LayerNorm
    num_heads: int = eqx.field(static=True)

    def __call__(
        self, x: Float[Array, "length dim"], attention_mask: Int[Array, " length"]
    ) -> Float[Array, "length dim"]:
        length, dim = x.shape
        head_dim = dim // self.num_heads

        def heads(y: Float[Array, "length dim"]) -> Float[Array, "heads length head_dim"]:
            return y.reshape(length, self.num_heads, head_dim).transpose(1, 0, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        # Masked keys get the dtype's most negative number (as Hugging Face BERT adds), not
        # -inf: a fully padded row then stays finite.
        scores = jnp.where(attention_mask[None, None, :] > 0, scores, jnp.finfo(x.dtype).min)
        context = jax.nn.softmax(scores, axis=-1) @ v
        context = context.transpose(1, 0, 2).reshape(length, dim)
        x = self.attention_norm(x + self.attention_output(context))
        hidden = jax.nn.gelu(self.intermediate(x), approximate=False)
        return self.output_norm(x + self.output(hidden))


class SentenceEncoder(eqx.Module):
    """BERT token states, and the mean-pooled, L2-normalised sentence embedding.

    Call :meth:`token_states` for the per-token states (``[length, dim]``; padded positions
    hold values that must be ignored through the mask) and :meth:`sentence_embedding` (or
    ``__call__``) for the ``[dim]`` unit vector sentence-transformers returns.
    """

    embeddings: BertEmbeddings
    layers: tuple[BertLayer, ...]

    @property
    def dim(self) -> int:
        """The width of the token states and of the sentence embedding (384 for MiniLM)."""
        return int(self.embeddings.word.shape[1])

    def token_states(
        self,
        input_ids: Int[Array, " length"],
        attention_mask: Int[Array, " length"],
        token_type_ids: Int[Array, " length"] | None = None,
    ) -> Float[Array, "length dim"]:
        """The last layer's hidden state of every position (BERT's ``last_hidden_state``)."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x

    def sentence_embedding(
        self,
        input_ids: Int[Array, " length"],
        attention_mask: Int[Array, " length"],
        token_type_ids: Int[Array, " length"] | None = None,
    ) -> Float[Array, " dim"]:
        """Mean of the token states over the mask, scaled to unit L2 norm."""
        states = self.token_states(input_ids, attention_mask, token_type_ids)
        return l2_normalize(mean_pool(states, attention_mask))

    def __call__(
        self,
        input_ids: Int[Array, " length"],
        attention_mask: Int[Array, " length"],
        token_type_ids: Int[Array, " length"] | None = None,
    ) -> Float[Array, " dim"]:
        return self.sentence_embedding(input_ids, attention_mask, token_type_ids)


def mean_pool(
    states: Float[Array, "length dim"], attention_mask: Int[Array, " length"]
) -> Float[Array, " dim"]:
    """Mean of the states of the unmasked positions (sentence-transformers' mean pooling,
    its 1e-9 floor on the token count included)."""
    mask = attention_mask.astype(states.dtype)[:, None]
    return jnp.sum(states * mask, axis=0) / jnp.maximum(jnp.sum(mask), 1e-9)


def l2_normalize(x: Float[Array, " dim"], eps: float = 1e-12) -> Float[Array, " dim"]:
    """``x / max(|x|, eps)`` (``torch.nn.functional.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def _layer_names(i: int) -> dict[str, str]:
    prefix = f"encoder.layer.{i}."
    return {
        "query": prefix + "attention.self.query",
        "key": prefix + "attention.self.key",
        "value": prefix + "attention.self.value",
        "attention_output": prefix + "attention.output.dense",
        "attention_norm": prefix + "attention.output.LayerNorm",
        "intermediate": prefix + "intermediate.dense",
        "output": prefix + "output.dense",
        "output_norm": prefix + "output.LayerNorm",
    }


def expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """The Hugging Face ``BertModel`` tensor names this module reads, with their shapes."""
    h, m = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_positions, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(config.num_layers):
        names = _layer_names(i)
        for field in ("query", "key", "value", "attention_output"):
            shapes[names[field] + ".weight"] = (h, h)
            shapes[names[field] + ".bias"] = (h,)
        shapes[names["intermediate"] + ".weight"] = (m, h)
        shapes[names["intermediate"] + ".bias"] = (m,)
        shapes[names["output"] + ".weight"] = (h, m)
        shapes[names["output"] + ".bias"] = (h,)
        for field in ("attention_norm", "output_norm"):
            shapes[names[field] + ".weight"] = (h,)
            shapes[names[field] + ".bias"] = (h,)
    return shapes


def sentence_encoder_from_tensors(
    config: BertConfig, tensors: Mapping[str, np.ndarray], dtype: Any = jnp.float32
) -> SentenceEncoder:
    """Build the encoder from Hugging Face ``BertModel`` tensors (``embeddings.*``,
    ``encoder.layer.{i}.*``; the unused ``pooler.*`` and ``embeddings.position_ids`` are
    ignored; a ``bert.`` prefix is accepted).

    Raises:
        KeyError: a tensor is missing (its name says which).
        ValueError: a tensor's shape differs from the one ``config`` implies.
    """
    if tensors and all(name.startswith("bert.") for name in tensors if "pooler" not in name):
        tensors = {name.removeprefix("bert."): value for name, value in tensors.items()}
    for name, shape in expected_shapes(config).items():
        if name not in tensors:
            raise KeyError(name)
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, expected {shape}")

    def array(name: str) -> Array:
        return jnp.asarray(tensors[name], dtype=dtype)

    def dense(name: str) -> Dense:
        return Dense(array(name + ".weight"), array(name + ".bias"))

    def norm(name: str) -> LayerNorm:
        return LayerNorm(array(name + ".weight"), array(name + ".bias"), config.layer_norm_eps)

    embeddings = BertEmbeddings(
        word=array("embeddings.word_embeddings.weight"),
        position=array("embeddings.position_embeddings.weight"),
        token_type=array("embeddings.token_type_embeddings.weight"),
        norm=norm("embeddings.LayerNorm"),
    )
    layers = []
    for i in range(config.num_layers):
        names = _layer_names(i)
        layers.append(
            BertLayer(
                query=dense(names["query"]),
                key=dense(names["key"]),
                value=dense(names["value"]),
                attention_output=dense(names["attention_output"]),
                attention_norm=norm(names["attention_norm"]),
                intermediate=dense(names["intermediate"]),
                output=dense(names["output"]),
                output_norm=norm(names["output_norm"]),
                num_heads=config.num_heads,
            )
        )
    return SentenceEncoder(embeddings=embeddings, layers=tuple(layers))
