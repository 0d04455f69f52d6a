#!/usr/bin/env bash
# Copies the header-only dependencies (nlohmann-json, spdlog, fmt, CLI11) and static zstd from this
# Debian machine into a folder that can travel to the GPU machine, which has LibTorch (inside
# PyTorch) but no Debian packages and no network. Usage: scripts/gpu-deps.sh [DIR=.gpu-deps]
set -euo pipefail
dir=${1:-.gpu-deps}
rm -rf "$dir"
mkdir -p "$dir/include" "$dir/lib"
cp -r /usr/include/nlohmann /usr/include/spdlog /usr/include/fmt /usr/include/CLI "$dir/include/"
cp /usr/include/zstd.h /usr/include/zstd_errors.h "$dir/include/"
cp /usr/lib/x86_64-linux-gnu/libzstd.a "$dir/lib/"
# Debian's spdlog/tweakme.h forces the compiled library; header-only use must not.
sed -i 's|^#define SPDLOG_COMPILED_LIB|// #define SPDLOG_COMPILED_LIB|' "$dir/include/spdlog/tweakme.h" || true
du -sh "$dir"
