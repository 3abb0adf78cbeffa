#!/usr/bin/env bash
# Benchmark: a full backup of a two-disk VM (a few GiB of random data each, the rest sparse)
# by `sendense backup start` against the same work done by hand (qemu-img create + qemu-nbd +
# nbdcopy per disk, both disks at once), alternating; then incrementals with ~1 % changed.
#   bench/backup.sh [DISK_SIZE] [RUNS]     defaults: 4G 3
set -euo pipefail
size=${1:-4G}
runs=${2:-3}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-backup.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export SENDENSE_HOME="$work/state"

# Two disks: 40 % random data each (seeded), the rest sparse.
for i in 0 1; do
    nbdkit -f --exit-with-parent -U "$work/gen$i.sock" sparse-random size="$size" percent=40 seed=$((7 + i)) >/dev/null 2>&1 &
    pids+=($!)
    while [ ! -S "$work/gen$i.sock" ]; do sleep 0.05; done
    qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen$i.sock" "$work/disk$i.qcow2"
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done
"$sendense" init >/dev/null
"$sendense" repo add local --path "$work/repo" >/dev/null
"$sendense" vm add bench --disk "$work/disk0.qcow2" --disk "$work/disk1.qcow2" >/dev/null

by_hand() {
    local n=$1
    for i in 0 1; do
        rm -f "$work/s$i.sock" "$work/t$i.sock"
        qemu-nbd -r -f qcow2 -x src -k "$work/s$i.sock" --shared=8 --persistent "$work/disk$i.qcow2" >/dev/null 2>&1 &
        echo $! >"$work/s$i.pid"
        qemu-img create -q -f qcow2 "$work/hand$n-$i.qcow2" "$size"
        qemu-nbd -f qcow2 -x t -k "$work/t$i.sock" --shared=8 --persistent --cache=none --aio=threads \
            "$work/hand$n-$i.qcow2" >/dev/null 2>&1 &
        echo $! >"$work/t$i.pid"
    done
    for i in 0 1; do while [ ! -S "$work/s$i.sock" ] || [ ! -S "$work/t$i.sock" ]; do sleep 0.01; done; done
    for i in 0 1; do
        nbdcopy --destination-is-zero --flush "nbd+unix:///src?socket=$work/s$i.sock" "nbd+unix:///t?socket=$work/t$i.sock" &
        echo $! >"$work/c$i.pid"
    done
    wait "$(cat "$work/c0.pid")" "$(cat "$work/c1.pid")"
    for i in 0 1; do
        kill "$(cat "$work/s$i.pid")" "$(cat "$work/t$i.pid")"
        wait "$(cat "$work/s$i.pid")" "$(cat "$work/t$i.pid")" 2>/dev/null || true
    done
    rm -f "$work/hand$n-"*.qcow2
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

echo "VM: two qcow2 disks of $size, 40 % random data each; repository on $(df --output=fstype "$work" | tail -1)"
: >"$work/t_sendense"; : >"$work/t_hand"
for n in $(seq "$runs"); do
    sync
    t0=$(now); by_hand "$n"; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/t_hand"
    sync
    t0=$(now); "$sendense" -q backup start bench --full >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/t_sendense"
    printf 'run %d: by hand %.2f s, sendense %.2f s\n' "$n" "$(tail -1 "$work/t_hand")" "$(tail -1 "$work/t_sendense")"
done
h=$(median <"$work/t_hand"); s=$(median <"$work/t_sendense")
printf 'full backup median: by hand %.2f s, sendense %.2f s, ratio %.3f\n' "$h" "$s" "$(echo "$s / $h" | bc -l)"

# ~1 % of both disks changes, then an incremental moves only that; repeated, median taken.
bytes=$(numfmt --from=iec "$size")
chunks=$((bytes / 100 / 1048576))
: >"$work/t_inc"
for n in $(seq "$runs"); do
    for i in 0 1; do
        cmds=()
        for k in $(seq 0 $((chunks - 1))); do
            cmds+=(-c "write -P $(((k + n) % 250 + 1)) $(( ((k * 7919 + n * 104729) % (bytes / 1048576)) * 1048576 )) 1M")
        done
        qemu-io -f qcow2 "${cmds[@]}" "$work/disk$i.qcow2" >/dev/null
    done
    sync
    t0=$(now); "$sendense" -q backup start bench --incremental >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/t_inc"
    printf 'incremental %d: %.2f s\n' "$n" "$(tail -1 "$work/t_inc")"
done
inc=$(median <"$work/t_inc")
printf 'incremental median (%d MiB changed per disk, 1 %%): %.2f s = %.1f %% of the full backup\n' "$chunks" "$inc" "$(echo "$inc * 100 / $s" | bc -l)"
