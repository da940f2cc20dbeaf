#!/usr/bin/env bash
# Trace decoding benchmark (issue 6): hiperiso-log versus QEMU's own
# scripts/simpletrace.py on the same generated simpletrace v4 file.
#   1. generate a trace of SIZE MiB (default 1024) with the test helper
#      runtime/examples/gen-simpletrace.rs;
#   2. hiperiso-log trace --format summary and --format text on all of it
#      (wall time, max RSS);
#   3. simpletrace.py is far slower, so both tools also decode the first
#      PY_MIB MiB subset (default 32; same deterministic generator, so it is
#      a prefix of the big file ending on a record boundary),
#      and simpletrace.py's full-file time is extrapolated from it (said so
#      in the output).
# Needs a QEMU 7.2 source tree for simpletrace.py: QEMU_SRC=/path/to/qemu-7.2.0
# Usage: QEMU_SRC=... tests/bench/trace.sh [SIZE_MIB] [PY_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-1024}
py_mib=${2:-32}
: "${QEMU_SRC:?set QEMU_SRC to a QEMU 7.2 source tree (scripts/simpletrace.py)}"

cargo build --release -q -p hiperiso-runtime --bin hiperiso-log --example gen-simpletrace
bin=$PWD/target/release/hiperiso-log
gen=$PWD/target/release/examples/gen-simpletrace
work=$(mktemp -d "${TMPDIR:-/tmp}/hiperiso-trace-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$gen" "$work/big.bin" "$work/events" "$size"
"$gen" "$work/small.bin" "$work/events" "$py_mib"
big=$(stat -c %s "$work/big.bin") small=$(stat -c %s "$work/small.bin")

# Runs "$@" with stdout to /dev/null; prints "wall_s max_rss_kib cpu_s"
# (CPU = user + sys: steadier than wall time on a busy machine).
measure() {
  /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" > /dev/null
  awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$work/time"
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / (s > 0 ? s : 0.01) }'; }

echo "trace: $((big >> 20)) MiB ($big bytes); subset: $((small >> 20)) MiB"
cat "$work/big.bin" > /dev/null  # page cache warm for every run

read -r sum_s sum_rss sum_cpu < <(measure "$bin" trace "$work/big.bin" --format summary --events "$work/events")
read -r txt_s txt_rss txt_cpu < <(measure "$bin" trace "$work/big.bin" --format text --events "$work/events")
echo "hiperiso-log summary, full file: ${sum_s}s wall (${sum_cpu}s CPU)  $(mbps "$big" "$sum_s") MiB/s  max RSS ${sum_rss} KiB"
echo "hiperiso-log text,    full file: ${txt_s}s wall (${txt_cpu}s CPU)  $(mbps "$big" "$txt_s") MiB/s  max RSS ${txt_rss} KiB"

read -r ours_small_s _ ours_small_cpu < <(measure "$bin" trace "$work/small.bin" --format text --events "$work/events")
read -r py_small_s py_rss py_small_cpu < <(measure env PYTHONPATH="$QEMU_SRC/scripts" python3 "$QEMU_SRC/scripts/simpletrace.py" "$work/events" "$work/small.bin")
echo "subset, text output:  hiperiso-log ${ours_small_s}s wall (${ours_small_cpu}s CPU)  simpletrace.py ${py_small_s}s wall (${py_small_cpu}s CPU, max RSS ${py_rss} KiB)"
awk -v p="$py_small_s" -v o="$ours_small_s" -v pc="$py_small_cpu" -v oc="$ours_small_cpu" 'BEGIN { printf "ratio on the same subset: simpletrace.py / hiperiso-log = %.1fx wall, %.1fx CPU\n", p / (o > 0 ? o : 0.01), pc / (oc > 0 ? oc : 0.01) }'
awk -v p="$py_small_s" -v sb="$small" -v bb="$big" -v t="$txt_s" -v s="$sum_s" 'BEGIN {
  est = p * bb / sb
  printf "simpletrace.py on the full file (EXTRAPOLATED linearly from the subset): %.0fs\n", est
  printf "ratio full file: simpletrace.py(extrapolated) / hiperiso-log text = %.1fx, / summary = %.1fx\n", est / t, est / s
}'
