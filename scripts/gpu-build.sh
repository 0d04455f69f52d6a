#!/usr/bin/env bash
# Builds the segicl CLI against the LibTorch bundled in an installed PyTorch (CUDA), without ITK,
# with header dependencies from .gpu-deps (scripts/gpu-deps.sh). Usage: scripts/gpu-build.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build-gpu}
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
deps=${SEGICL_DEPS_DIR:-$PWD/.gpu-deps}
export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DSEGICL_WITH_ITK=OFF -DSEGICL_BUILD_TESTS=OFF -DSEGICL_BUILD_BENCH=OFF \
  -DSEGICL_DEPS_DIR="$deps" -DTORCH_CUDA_ARCH_LIST="9.0" ${SEGICL_CMAKE_FLAGS:-}
cmake --build "$build" -j "$(nproc)" --target segicl
