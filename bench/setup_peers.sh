#!/usr/bin/env bash
# Create .venv-bench (peer libraries for bench/peers.py), kept apart from the project's .venv
# because sae-lens pulls transformer-lens, transformers, wandb, etc.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv-bench/bin/python ]; then
    echo ".venv-bench already exists; skipping"
    exit 0
fi
python3 -m venv .venv-bench
# A half-installed venv would be skipped next time, so remove it on failure.
.venv-bench/bin/pip install -q -r bench/requirements-peers.txt || { rm -rf .venv-bench; exit 1; }
echo ".venv-bench ready"
