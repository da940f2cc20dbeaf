#!/bin/bash
# The default profile from source, end to end (issue 9). Outside CI: about
# an hour on 2 cores.
#
#   1. `hiperiso-build image` from a cold step cache: the tools tree, every
#      recipe (independent ones concurrently, `--jobs`), the runtime step,
#      the ESP. Downloads are shared with the default cache (they are
#      pinned by sha256; only building is measured). Prints each step's time,
#      the total and the ESP payload's size.
#   2. `hiperiso-build verify`: every step rebuilt in a varied environment
#      (build path, umask, locale) and compared bit for bit.
#   3. The end-to-end suite (tests/it/e2e.rs) on that image.
#
# Usage: bash tests/full-build.sh [WORKDIR]     (default: /var/tmp/hiperiso-full-build.*)
#        SKIP_VERIFY=1 / SKIP_E2E=1 leave out stage 2 / 3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/hiperiso-full-build.XXXXXX)}
cache=$work/cache
mkdir -p "$cache"
shared=${HIPERISO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hiperiso}
if [ -d "$shared/blobs" ] && [ ! -e "$cache/blobs" ]; then
    ln -s "$shared/blobs" "$cache/blobs"
fi
cd "$repo"
cargo build --release -q -p hiperiso-build
hb() { "$repo/target/release/hiperiso-build" --cache-dir "$cache" "$@"; }
now() { date +%s; }
say() { printf '\n== %s\n' "$*"; }

say "1. cold build of the default profile into $work (log: $work/image.log)"
t0=$(now)
hb image -o "$work/hiperiso.img" 2>&1 | tee "$work/image.log"
t1=$(now)
say "step times (as built, concurrently where independent)"
grep -E '^built [a-z0-9-]+ in ' "$work/image.log" || true
grep -E 'payload: ' "$work/image.log" || true
echo "cold image build: $((t1 - t0)) s"
hb inspect "$work/hiperiso.img" | tee "$work/inspect.txt"

if [ -z "${SKIP_VERIFY:-}" ]; then
    say "2. verify every step (log: $work/verify.log)"
    { hb verify && hb verify runtime; } 2>&1 | tee "$work/verify.log"
    t2=$(now)
    echo "verify: $((t2 - t1)) s"
fi

if [ -z "${SKIP_E2E:-}" ]; then
    say "3. the end-to-end suite on $work/hiperiso.img"
    HIPERISO_E2E_IMAGE="$work/hiperiso.img" cargo test -p hiperiso-tests --test it e2e:: -- \
        --test-threads=1 2>&1 | tee "$work/e2e.log"
fi
say "done: $work"
