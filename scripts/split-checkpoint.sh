#!/usr/bin/env bash
# Splits a checkpoint into PATH.00, PATH.01, ... of at most 15 MiB each, so shipped models stay
# under the per-file limits of git pushes and of the GPU machine's $OUT. The loader reads either
# form. Usage: scripts/split-checkpoint.sh FILE [DEST_PREFIX=FILE]
set -euo pipefail
src=$1
dest=${2:-$1}
rm -f "$dest".[0-9][0-9]
split -b 15M -d -a 2 "$src" "$dest".
ls -la "$dest".[0-9][0-9]
