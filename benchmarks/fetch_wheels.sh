#!/usr/bin/env bash
# The wheels the device check needs that the GPU machine's image lacks, into .whl/ (git-ignored).
#
# The GPU machine (Python 3.12, x86-64, torch 2.11, transformers, numpy, pyyaml, safetensors; no
# internet) has no pydantic (train.config needs it) and no Liger-Kernel (`loss: auto` uses it on
# CUDA). pydantic's own requirements are listed too (--no-deps: exactly these, nothing else);
# typing-extensions is brought because pydantic 2.14 needs a newer one than an image may have.
# About 4 MB in all; the device call carries `.whl` (benchmarks/README.md has the command line).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 liger-kernel==0.8.5
ls -l .whl
du -sh .whl
