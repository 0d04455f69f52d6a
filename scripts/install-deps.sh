#!/usr/bin/env bash
# Installs every Debian package segicl needs to build, test and demo. Idempotent: packages already
# present are skipped, so running it on every `make` costs a dpkg query, not an apt round-trip.
# It deliberately downloads nothing but Debian packages (and, for the web viewer, npm packages).
set -euo pipefail

# clang + libclang-rt-14-dev (libFuzzer) + llvm (llvm-symbolizer) build and run fuzz/ (`make test`).
# python3-matplotlib draws the figures of reports/RESULTS.md (scripts/plot-results.py).
PACKAGES=(
  build-essential cmake ninja-build ccache mold pkg-config
  libtorch-dev libopenblas0-pthread libgloo-dev
  libinsighttoolkit5-dev libgdcm-tools
  libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libzstd-dev zstd libcpp-httplib-dev libpng-dev libjpeg62-turbo-dev
  clang libclang-rt-14-dev llvm
  python3-nibabel python3-numpy python3-matplotlib time
  chromium
)
# The web page's build step (npm) and its headless test (node): a node that is already there
# (e.g. NodeSource's, which bundles npm and conflicts with Debian's npm package) is kept.
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} Debian packages present" >&2
fi

# LibTorch picks BLAS at run time through Debian's alternatives; reference BLAS is ~30x slower.
if command -v update-alternatives >/dev/null; then
  for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -n1 || true)
    if [ -n "$target" ]; then update-alternatives --set "$alt" "$target" >/dev/null 2>&1 || true; fi
  done
fi

# npm packages of the web page (NiiVue) and of its test (playwright-core), from the committed lock
# file into web/node_modules; the build copies NiiVue next to the page from there.
"$(dirname "${BASH_SOURCE[0]}")/vendor-web.sh"
