#!/usr/bin/env bash
# Benchmark: restoring the top of a backup chain (full + incremental of a disk with a few GiB of
# random data) by `sendense restore` against `qemu-img convert` of the same chain, alternating.
#   bench/restore.sh [DISK_SIZE] [RUNS]     defaults: 4G 3
set -euo pipefail
size=${1:-4G}
runs=${2:-3}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-restore.XXXXXX)
gen=""
cleanup() { [ -n "$gen" ] && kill "$gen" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export SENDENSE_HOME="$work/state"

nbdkit -f --exit-with-parent -U "$work/gen.sock" sparse-random size="$size" percent=40 seed=11 >/dev/null 2>&1 &
gen=$!
while [ ! -S "$work/gen.sock" ]; do sleep 0.05; done
qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen.sock" "$work/disk.qcow2"
kill "$gen"; wait "$gen" 2>/dev/null || true; gen=""
"$sendense" init >/dev/null
"$sendense" repo add local --path "$work/repo" >/dev/null
"$sendense" vm add bench --disk "$work/disk.qcow2" >/dev/null
"$sendense" -q backup start bench >/dev/null
qemu-io -f qcow2 -c "write -P 0x42 1G 256M" "$work/disk.qcow2" >/dev/null
"$sendense" -q backup start bench >/dev/null
id=$("$sendense" backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
top=$("$sendense" backup show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["file"])')

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for fmt in raw qcow2; do
    : >"$work/t_s"; : >"$work/t_n"; : >"$work/t_q"; : >"$work/t_qs"
    for n in $(seq "$runs"); do
        t0=$(now); qemu-img convert -O "$fmt" "$top" "$work/q.$fmt"; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/t_q"
        # qemu-img convert writes its output with cache=unsafe and never syncs it; a restore
        # returns only once its file is durable. Both ways of timing the reference are shown.
        sync "$work/q.$fmt"; t2=$(now)
        echo "$t2 - $t0" | bc -l >>"$work/t_qs"
        t0=$(now); "$sendense" -q restore "$id" --disk 2000 --to "$work/s.$fmt" --format "$fmt" --force >/dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/t_s"
        qemu-img compare -q "$work/q.$fmt" "$work/s.$fmt" || { echo "restores differ!"; exit 1; }
        # The same restore without checking the digests: what the checking costs.
        t0=$(now); "$sendense" -q restore "$id" --disk 2000 --to "$work/n.$fmt" --format "$fmt" --force --no-verify >/dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/t_n"
        rm -f "$work/q.$fmt" "$work/s.$fmt" "$work/n.$fmt"
    done
    q=$(median <"$work/t_q"); qs=$(median <"$work/t_qs"); s=$(median <"$work/t_s"); n=$(median <"$work/t_n")
    printf 'restore to %-5s median: qemu-img convert %.2f s (%.2f s with its file synced), sendense %.2f s, ratio %.3f (%.3f); --no-verify %.2f s, ratio %.3f (%.3f)\n' \
        "$fmt" "$q" "$qs" "$s" "$(echo "$s / $q" | bc -l)" "$(echo "$s / $qs" | bc -l)" \
        "$n" "$(echo "$n / $q" | bc -l)" "$(echo "$n / $qs" | bc -l)"
done
