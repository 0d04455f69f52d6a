#!/usr/bin/env bash
# Builds the segicl CLI against the LibTorch bundled in an installed PyTorch (CUDA), without ITK,
# with header dependencies from .gpu-deps (scripts/gpu-deps.sh). Usage: scripts/gpu-build.sh [BUILD_DIR]
# Without a PyTorch in python3 (this Debian machine) it builds the same configuration against the
# system LibTorch on the CPU: `make noitk` does that so CI compiles and tests the GPU configuration.
set -euo pipefail
build=${1:-build-gpu}
if ! prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2> /dev/null); then
  prefix=""
  echo "gpu-build: no PyTorch in python3; building against the system LibTorch (CPU only)"
fi
deps=${SEGICL_DEPS_DIR:-$PWD/.gpu-deps}
export PATH=/usr/local/cuda/bin:$PATH
# nccl.h for c10d's ProcessGroupNCCL (multi-GPU `segicl train --nproc N`): PyTorch's nvidia-nccl
# wheel, else the CUDA toolkit; without it the build trains on one GPU per job (see configure log).
nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' \
  2> /dev/null || echo /usr/local/cuda/include)
# On the GPU machine: its image has its own spdlog in /usr/include (built for another fmt), and
# PyTorch's include folder bundles fmt 12, which Debian's spdlog 1.10 cannot compile against
# (first GPU build, session 12). So the travelling headers are forced, and put first with -I:
# GCC searches -I folders before the -isystem ones of imported targets (torch's included).
gpu_flags=()
[ -n "$prefix" ] && gpu_flags=(-DSEGICL_FORCE_DEPS_DIR=ON "-DCMAKE_CXX_FLAGS=-I$deps/include")
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "${gpu_flags[@]}" \
  -DSEGICL_WITH_ITK=OFF -DSEGICL_BUILD_TESTS=OFF -DSEGICL_BUILD_BENCH=OFF \
  -DSEGICL_DEPS_DIR="$deps" -DTORCH_CUDA_ARCH_LIST="9.0" -DSEGICL_NCCL_INCLUDE_DIR="$nccl" \
  ${SEGICL_CMAKE_FLAGS:-}
cmake --build "$build" -j "$(nproc)" --target segicl
