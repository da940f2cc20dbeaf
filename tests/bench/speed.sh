#!/usr/bin/env bash
# Issue 18's figures in one run, as root: the debian profile against mkosi 26
# (cold, warm, overlay edit, no-op, with ratios) and the from-source
# profile's no-op `image` (vs_mkosi.sh with FROM_SOURCE=1; its steps must be
# cached), then image assembly against the shell pipeline at 8 GiB and
# 64 GiB and install against dd (disk.sh).
# Usage: tests/bench/speed.sh   (MKOSI / MKOSI_SRC as for vs_mkosi.sh)
set -euo pipefail
cd "$(dirname "$0")"
FROM_SOURCE=1 bash vs_mkosi.sh
bash disk.sh 8GiB 64GiB
