#!/usr/bin/env bash
# Configures and builds raftkv into build/ (or $RAFTKV_BUILD_DIR).
# Usage: scripts/build.sh [extra cmake -D options]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RAFTKV_BUILD_DIR:-$root/build}
"$root/scripts/install-deps.sh"
# Configure every time: cheap, and it picks up test folders added since.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
