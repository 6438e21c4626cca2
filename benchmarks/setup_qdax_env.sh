#!/usr/bin/env bash
# Create a separate virtualenv holding QDax 0.5.0 for the throughput benchmark
# (benchmarks/qdax_reference.py). QDax pulls tensorflow-probability and jumanji,
# which we do not want in the main environment.
#
# Usage:
#   benchmarks/setup_qdax_env.sh [VENV_DIR]
#   QDAX_VENV=/some/path benchmarks/setup_qdax_env.sh
#
# Default VENV_DIR is <repo root>/.venv-qdax (ignored by .gitignore's `.venv-*/`).
# The script is idempotent: if the venv already imports qdax 0.5.0 with the pinned
# brax/jax, it does nothing. Set QDAX_FORCE=1 to reinstall.
#
# Version pins (override with env vars if needed):
#   qdax 0.5.0 only requires brax>=0.10.4, jax>=0.4.28, flax>=0.8.5 (no upper bounds),
#   so an unpinned install takes the newest releases. The set below is the one that was
#   checked to import and run MAP-Elites on walker2d_uni on CPU (brax spring backend),
#   and matches the jax/brax versions of the main qdzoo environment.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${1:-${QDAX_VENV:-$REPO_ROOT/.venv-qdax}}"
PYTHON="${QDAX_PYTHON:-python3.11}"

QDAX_VERSION="${QDAX_VERSION:-0.5.0}"
BRAX_VERSION="${QDAX_BRAX_VERSION:-0.14.2}"
JAX_VERSION="${QDAX_JAX_VERSION:-0.10.2}"
FLAX_VERSION="${QDAX_FLAX_VERSION:-0.12.8}"

check_installed() {
    [ -x "$VENV_DIR/bin/python" ] || return 1
    "$VENV_DIR/bin/python" - "$QDAX_VERSION" "$BRAX_VERSION" "$JAX_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
want_qdax, want_brax, want_jax = sys.argv[1:4]
assert version("qdax") == want_qdax, version("qdax")
assert version("brax") == want_brax, version("brax")
assert version("jax") == want_jax, version("jax")
import qdax.tasks.brax.v2  # noqa: F401  (pulls brax, flax)
import qdax.core.map_elites  # noqa: F401
EOF
}

if [ "${QDAX_FORCE:-0}" != "1" ] && check_installed; then
    echo "qdax ${QDAX_VERSION} already installed in ${VENV_DIR}; nothing to do."
    exit 0
fi

if [ ! -x "$VENV_DIR/bin/python" ]; then
    echo "Creating virtualenv ${VENV_DIR} with ${PYTHON}"
    "$PYTHON" -m venv "$VENV_DIR"
fi

"$VENV_DIR/bin/python" -m pip install --upgrade pip
"$VENV_DIR/bin/python" -m pip install \
    "qdax==${QDAX_VERSION}" \
    "brax==${BRAX_VERSION}" \
    "jax==${JAX_VERSION}" \
    "jaxlib==${JAX_VERSION}" \
    "flax==${FLAX_VERSION}"

if ! check_installed; then
    echo "qdax environment in ${VENV_DIR} failed the import check" >&2
    exit 1
fi

"$VENV_DIR/bin/python" - <<'EOF'
from importlib.metadata import version
print("qdax", version("qdax"), "| brax", version("brax"), "| jax", version("jax"),
      "| flax", version("flax"))
EOF
echo "Run: ${VENV_DIR}/bin/python benchmarks/qdax_reference.py --json"
