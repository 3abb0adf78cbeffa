#!/usr/bin/env bash
# Benchmark: eight small image VMs (256 MiB disks, 64 MiB of random data each) backed up by one
# `sendense schedule run` of a group with --max-parallel 4, against the same eight full
# backups by `sendense backup start`, one after another; alternating, medians reported.
#   bench/schedule.sh [RUNS]      default: 3
set -euo pipefail
runs=${1:-3}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-schedule.XXXXXX)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for i in $(seq 1 8); do
    qemu-img create -q -f qcow2 "$work/vm$i.qcow2" 256M
    qemu-io -f qcow2 -c "write -P $i 0 64M" "$work/vm$i.qcow2" >/dev/null
done

# A fresh hub in $1 with the eight VMs in group g (policy at every minute, --max-parallel 4).
hub() {
    export SENDENSE_HOME="$1/state"
    export SENDENSE_TEST_NOW=2026-11-28T12:00:00Z
    "$sendense" init -q >/dev/null
    "$sendense" repo add r --path "$1/repo" >/dev/null
    "$sendense" policy add p --repo r --schedule '* * * * *' >/dev/null
    "$sendense" group add g --policy p --max-parallel 4 >/dev/null
    for i in $(seq 1 8); do
        "$sendense" vm add "vm$i" --disk "$work/vm$i.qcow2" >/dev/null
        "$sendense" group add-vm g "vm$i" >/dev/null
    done
    export SENDENSE_TEST_NOW=2026-11-28T12:05:00Z
}

par=(); seq_=()
for run in $(seq "$runs"); do
    for order in parallel sequential; do
        dir="$work/$order$run"
        hub "$dir"
        sync
        t0=$(now)
        if [ "$order" = parallel ]; then
            "$sendense" schedule run -q >/dev/null
        else
            for i in $(seq 1 8); do "$sendense" backup start "vm$i" -q; done
        fi
        t1=$(now)
        s=$(echo "$t1 - $t0" | bc -l)
        printf 'run %d %-10s %.2f s\n' "$run" "$order" "$s"
        if [ "$order" = parallel ]; then par+=("$s"); else seq_+=("$s"); fi
        rm -rf "$dir"
    done
done
p=$(printf '%s\n' "${par[@]}" | median); s=$(printf '%s\n' "${seq_[@]}" | median)
printf 'median: schedule run (max-parallel 4) %.2f s, one after another %.2f s, ratio %.2f\n' \
    "$p" "$s" "$(echo "$p / $s" | bc -l)"
