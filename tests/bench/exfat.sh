#!/usr/bin/env bash
# Benchmark: our exFAT format of an 8 GiB sparse volume against
# `truncate` + `mkfs.exfat`, side by side in one run; prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -q -p hiperiso-installer --bench exfat_format
