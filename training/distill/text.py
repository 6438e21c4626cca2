"""Text conditions of a distillation: the elites' labels, embedded once by the frozen encoder.

A labels file (``labels.json``, written by ``qdzoo label ARCHIVE``, :mod:`zoo.labels`) holds
one record per elite: its ``cell``, its ``label`` and a few ``paraphrases``. Every distinct
text of every elite (the label first, then its paraphrases) is embedded once by the frozen
sentence encoder (:class:`zoo.text_encoder.TextEncoder`, pooled, unit-norm, 384 numbers):
the encoder never runs inside the training loop. :class:`TextConditions` holds the table of
embeddings ``[texts, 384]`` and, per elite, the rows of its texts; a training row draws one
of its elite's texts uniformly (:func:`draw_embeddings`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from zoo.errors import ArtifactError, ConfigError

__all__ = [
    "DESCRIPTOR_TOLERANCE",
    "LABEL_COMMAND",
    "TextConditions",
    "draw_embeddings",
    "labels_for_elites",
    "read_labels",
    "text_conditions",
]

LABEL_COMMAND = "qdzoo label ARCHIVE"
"""What a user runs to write the labels file beside an archive."""
DESCRIPTOR_TOLERANCE = 1e-3
"""Largest difference between a record's (rounded) descriptors and the archive's before the
labels file counts as written for another archive."""


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    """The records of a labels file (``{"format": "qdzoo-labels", ..., "labels": [...]}``).

    Raises:
        ConfigError: no such file (the message says to run ``qdzoo label ARCHIVE``).
        ArtifactError: not a labels file, or records without ``cell`` and ``label``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"text conditions need the elites' labels, but {path} does not exist; write them "
            f"with `{LABEL_COMMAND}` (labels.json beside the archive) or pass --labels FILE"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(
            f"{path} is not a JSON labels file ({err}); run `{LABEL_COMMAND}`"
        ) from None
    records = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(records, list) or (
        isinstance(data, dict) and data.get("format") not in (None, "qdzoo-labels")
    ):
        raise ArtifactError(
            f"{path} is not a qdzoo labels file (expected an object with format "
            f"'qdzoo-labels' and a 'labels' list); write one with `{LABEL_COMMAND}`"
        )
    for i, record in enumerate(records):
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("cell"), int)
            or not isinstance(record.get("label"), str)
            or not record["label"].strip()
            or not all(isinstance(p, str) for p in record.get("paraphrases", []))
        ):
            raise ArtifactError(
                f"{path}: record {i} must hold an integer 'cell', a non-empty 'label' and a "
                f"list of 'paraphrases' (strings), got {json.dumps(record)[:120]}; write the "
                f"file again with `{LABEL_COMMAND}`"
            )
    return records


def labels_for_elites(
    records: Sequence[Mapping[str, Any]],
    cells: Int[np.ndarray, " elites"],
    descriptors: Float[np.ndarray, "elites k"] | None = None,
    *,
    where: str = "the labels",
) -> list[list[str]]:
    """Each elite's distinct texts, its label first then its paraphrases, in ``cells`` order.

    Args:
        records: the labels file's records.
        cells: the archive's elite cells.
        descriptors: the elites' descriptors, checked against the records' (when they hold
            some) to refuse a labels file of another archive.
        where: the file, for messages.

    Raises:
        ConfigError: an elite without a record, or records that describe another archive.
    """
    by_cell = {int(r["cell"]): r for r in records}
    missing = [int(c) for c in cells if int(c) not in by_cell]
    if missing:
        raise ConfigError(
            f"{where} label {len(cells) - len(missing)} of the archive's {len(cells)} elites; "
            f"cells {missing[:8]}{' ...' if len(missing) > 8 else ''} have none. The labels "
            f"were written for another archive: run `{LABEL_COMMAND}` again"
        )
    texts = []
    for i, cell in enumerate(cells):
        record = by_cell[int(cell)]
        stored = record.get("descriptors")
        if descriptors is not None and stored is not None:
            stored = np.asarray(stored, np.float64)
            if stored.shape != descriptors[i].shape or np.max(
                np.abs(stored - descriptors[i])
            ) > DESCRIPTOR_TOLERANCE * (1.0 + np.max(np.abs(descriptors[i]))):
                raise ConfigError(
                    f"{where} give cell {int(cell)} the descriptors {stored.tolist()} but the "
                    f"archive's elite there has {np.round(descriptors[i], 4).tolist()}; the "
                    f"labels were written for another archive: run `{LABEL_COMMAND}` again"
                )
        texts.append(list(dict.fromkeys([record["label"], *record.get("paraphrases", [])])))
    return texts


class TextConditions(eqx.Module):
    """The elites' texts and their frozen sentence embeddings.

    Attributes:
        table: ``[texts, embedding]`` embeddings of the distinct texts.
        index: ``[elites, most]`` rows of ``table`` of each elite's texts (padded with its
            first text).
        counts: ``[elites]`` texts of each elite (``>= 1``; its label is the first).
        texts: the distinct texts, in ``table`` order.
    """

    table: Float[Array, "texts embedding"]
    index: Int[Array, "elites most"]
    counts: Int[Array, " elites"]
    texts: tuple[str, ...] = eqx.field(static=True)

    @property
    def labels(self) -> Float[Array, "elites embedding"]:
        """Each elite's label embedding (its first text)."""
        return self.table[self.index[:, 0]]

    def fingerprint(self) -> str:
        """sha256 of the texts of every elite and of their embeddings (a resumed run must
        see the same)."""
        digest = hashlib.sha256(json.dumps(self.texts).encode())
        for array in (self.table, self.index, self.counts):
            digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
        return digest.hexdigest()


def text_conditions(texts: Sequence[Sequence[str]], encoder: Any) -> TextConditions:
    """Embed every distinct text of ``texts`` (one list per elite) once with ``encoder``
    (:class:`zoo.text_encoder.TextEncoder`, or anything with ``encode(list[str])``)."""
    distinct = list(dict.fromkeys(t for elite in texts for t in elite))
    row = {t: i for i, t in enumerate(distinct)}
    most = max(len(elite) for elite in texts)
    index = np.array(
        [
            [row[elite[j]] if j < len(elite) else row[elite[0]] for j in range(most)]
            for elite in texts
        ],
        np.int32,
    )
    counts = np.array([len(elite) for elite in texts], np.int32)
    table = jnp.asarray(encoder.encode(distinct), jnp.float32)
    return TextConditions(table, jnp.asarray(index), jnp.asarray(counts), tuple(distinct))


def draw_embeddings(
    key: PRNGKeyArray, text: TextConditions, rows: Int[Array, " batch"]
) -> Float[Array, "batch embedding"]:
    """One of its texts' embeddings per elite of ``rows``, drawn uniformly."""
    counts = text.counts[rows]
    choice = jnp.floor(jax.random.uniform(key, rows.shape) * counts).astype(jnp.int32)
    choice = jnp.minimum(choice, counts - 1)
    return text.table[text.index[rows, choice]]
