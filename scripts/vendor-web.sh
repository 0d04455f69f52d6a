#!/usr/bin/env bash
# Vendors the web page's npm packages: `npm ci` from web/package-lock.json into web/node_modules
# (NiiVue for the page, playwright-core for its headless test), then copies NiiVue's dist/ into
# web/vendor/niivue/ and, given OUT, the page plus vendor/ into OUT (the build tree's web/).
# Runs at build time only; the server never fetches anything. Offline once npm's cache holds the
# locked versions (--prefer-offline).
# Usage: scripts/vendor-web.sh [OUT]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
web="$root/web"
out="${1:-}"

if ! command -v npm >/dev/null; then
  echo "vendor-web: npm not found; run scripts/install-deps.sh (installs nodejs and npm)" >&2
  exit 1
fi

# npm ci wipes node_modules; skip it while the installed tree matches the lock file.
stamp="$web/node_modules/.segicl-lock.sha256"
want=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -d "$web/node_modules/@niivue/niivue/dist" ]; then
  echo "vendor-web: npm ci in $web" >&2
  (cd "$web" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)
  echo "$want" >"$stamp"
fi

rm -rf "$web/vendor/niivue"
mkdir -p "$web/vendor/niivue"
cp "$web/node_modules/@niivue/niivue/dist/"* "$web/vendor/niivue/"
cp "$web/node_modules/@niivue/niivue/LICENSE" "$web/vendor/niivue/" 2>/dev/null || true

if [ -n "$out" ]; then
  mkdir -p "$out"
  cp "$web/index.html" "$web/app.js" "$web/style.css" "$out/"
  rm -rf "$out/vendor"
  cp -r "$web/vendor" "$out/vendor"
fi
