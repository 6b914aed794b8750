#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies, builds the
# release tree and the sanitizer (address + undefined) tree of the core, and
# runs every test through ctest in both.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"

echo "== release build"
RAFTKV_BUILD_DIR=$root/build "$root/scripts/build.sh"
echo "== sanitizer build (raft/, storage/ and their tests)"
RAFTKV_BUILD_DIR=$root/build-asan "$root/scripts/build.sh" -DRAFTKV_SANITIZE=ON -DRAFTKV_CORE_ONLY=ON

echo "== tests, sanitizer build"
(cd "$root/build-asan" && ctest --output-on-failure -j"$(nproc)" --timeout 900)
echo "== tests, release build"
(cd "$root/build" && ctest --output-on-failure -j"$(nproc)" --timeout 900)
