#!/usr/bin/env bash
# Measures qemu-nbd --cache/--aio combinations for backup targets: the same source
# (nbdkit sparse-random) copied by sendense-sna into a fresh qcow2 served with each combination.
#   bench/qemu-nbd-flags.sh [SIZE] [RUNS]      defaults: 8G 3
set -euo pipefail
size=${1:-8G}
runs=${2:-3}
sna=${SNA:-target/release/sendense-sna}
work=$(mktemp -d /tmp/sendense-flags.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
nbdkit -f --exit-with-parent -U "$work/src.sock" sparse-random size="$size" percent=25 seed=2026 >/dev/null 2>&1 &
pids+=($!)
while [ ! -S "$work/src.sock" ]; do sleep 0.05; done
for combo in writeback:threads writeback:io_uring none:threads none:native none:io_uring; do
    cache=${combo%:*}; aio=${combo#*:}
    times=()
    for i in $(seq "$runs"); do
        qemu-img create -q -f qcow2 "$work/t.qcow2" "$size"
        rm -f "$work/t.sock"
        qemu-nbd -f qcow2 -x t -k "$work/t.sock" --shared=8 --persistent --cache="$cache" --aio="$aio" \
            --discard=unmap "$work/t.qcow2" >/dev/null 2>&1 &
        qp=$!
        while [ ! -S "$work/t.sock" ]; do sleep 0.02; done
        start=$(date +%s.%N)
        "$sna" -q copy --destination-is-zero "nbd+unix:///?socket=$work/src.sock" "nbd+unix:///t?socket=$work/t.sock"
        end=$(date +%s.%N)
        kill "$qp"; wait "$qp" 2>/dev/null || true
        times+=("$(echo "$end - $start" | bc -l)")
        rm -f "$work/t.qcow2"
    done
    med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
    printf 'cache=%-9s aio=%-8s median %6.2f s  (%s)\n' "$cache" "$aio" "$med" "$(printf '%.2f ' "${times[@]}")"
done
