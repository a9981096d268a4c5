#!/usr/bin/env bash
# Rebuild vendor/candle-core from the published crate and vendor/candle-core.patch, or, with
# `--check`, verify that the committed copy is exactly that (published crate + patch).
# See vendor/README.md for why the copy exists.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.11.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -sSfL "https://static.crates.io/crates/candle-core/candle-core-$version.crate" \
  | tar -xz -C "$work"
(cd "$work/candle-core-$version" && patch -s -p1 < "$OLDPWD/vendor/candle-core.patch")
if [[ "${1:-}" == "--check" ]]; then
  diff -r "$work/candle-core-$version" vendor/candle-core && echo "vendor/candle-core: published $version + patch"
else
  rm -rf vendor/candle-core
  mv "$work/candle-core-$version" vendor/candle-core
  echo "vendor/candle-core rebuilt from candle-core $version + vendor/candle-core.patch"
fi
