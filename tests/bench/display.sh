#!/usr/bin/env bash
# Display benchmarks (issue 10), as root:
#   1. on this machine: decoding one full-screen RFB Raw update and fitting
#      it onto a framebuffer, against a naive per-pixel float scaler
#      (`cargo bench -p hiperiso-runtime --bench viewer`);
#   2. inside the outer test VM (TCG, the stick's nested KVM): a guest that
#      redraws its whole VGA screen without pause for SECONDS; prints the
#      viewer's updates per second, latency from an update's first byte to
#      its pixels on the framebuffer, and its CPU use against QEMU's (guest
#      plus VNC server) in the same run, from the session's display.json.
# Usage: tests/bench/display.sh [SECONDS]      (default 60; one outer boot, ~3 min more)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
cargo bench -q -p hiperiso-runtime --bench viewer
HIPERISO_BENCH_SECONDS=$seconds cargo test -q -p hiperiso-tests --test it -- \
  --ignored --nocapture --exact display_bench::bench_viewer_while_the_guest_redraws 2>&1 |
  grep -E '^(viewer|  |display.json)'
