#!/usr/bin/env bash
# Benchmark: the same source (nbdkit sparse-random) copied into the same kind of fresh qemu-nbd
# qcow2 target by nbdcopy and by sendense-sna copy, alternating; then a dirty-bitmap incremental
# of ~1 % changed data against the full copy. Prints medians, the ratio and peak RSS.
#
#   bench/copy.sh [SIZE] [RUNS]      defaults: 8G 3
set -euo pipefail

size=${1:-8G}
runs=${2:-3}
sna=${SNA:-target/release/sendense-sna}
work=$(mktemp -d /tmp/sendense-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for tool in nbdkit nbdcopy qemu-nbd qemu-img qemu-io /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool (make deps installs it)"; exit 1; }
done
[ -x "$sna" ] || { echo "missing $sna: build with cargo build --release"; exit 1; }

# The source: 25 % random data, the rest sparse. Seeded, so every run copies the same bytes.
nbdkit -f --exit-with-parent -U "$work/src.sock" sparse-random size="$size" percent=25 seed=2026 \
    >/dev/null 2>&1 &
pids+=($!)
while [ ! -S "$work/src.sock" ]; do sleep 0.05; done
src="nbd+unix:///?socket=$work/src.sock"

# qemu-nbd flags for targets, as Sendense uses them for backup targets.
QEMU_NBD_FLAGS=(--shared=8 --persistent --cache=writeback --aio=threads)

start_target() { # $1 = image, $2 = export; sets dst and tpid
    rm -f "$work/$2.sock"
    qemu-nbd -f qcow2 -x "$2" -k "$work/$2.sock" "${QEMU_NBD_FLAGS[@]}" "$1" >/dev/null 2>&1 &
    tpid=$!
    pids+=($tpid)
    while [ ! -S "$work/$2.sock" ]; do sleep 0.02; done
    dst="nbd+unix:///$2?socket=$work/$2.sock"
}
stop_target() { kill "$tpid"; wait "$tpid" 2>/dev/null || true; }

measure() { # prints "seconds max_rss_kib" for the command
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
    cat "$work/time"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "source: nbdkit sparse-random size=$size percent=25; target: fresh qcow2 via qemu-nbd ${QEMU_NBD_FLAGS[*]}"
: >"$work/nbdcopy"; : >"$work/sendense"
for i in $(seq "$runs"); do
    for tool in nbdcopy sendense; do
        img="$work/t-$tool-$i.qcow2"
        qemu-img create -q -f qcow2 "$img" "$size"
        start_target "$img" "t$i$tool"
        if [ "$tool" = nbdcopy ]; then
            r=$(measure nbdcopy --destination-is-zero --flush "$src" "$dst")
        else
            r=$(measure "$sna" -q copy --destination-is-zero "$src" "$dst")
        fi
        stop_target
        # Keep the first sendense copy as the base of the incremental below.
        if [ "$tool" = sendense ] && [ "$i" = 1 ]; then mv "$img" "$work/base.qcow2"; else rm -f "$img"; fi
        echo "$r" >>"$work/$tool"
        printf 'run %d %-9s %6.2f s  peak RSS %6d KiB\n' "$i" "$tool" ${r% *} ${r#* }
    done
done
n_med=$(cut -d' ' -f1 "$work/nbdcopy" | median)
s_med=$(cut -d' ' -f1 "$work/sendense" | median)
n_rss=$(cut -d' ' -f2 "$work/nbdcopy" | sort -n | tail -1)
s_rss=$(cut -d' ' -f2 "$work/sendense" | sort -n | tail -1)
echo
printf 'full copy median: nbdcopy %.2f s, sendense-sna %.2f s, ratio %.3f\n' "$n_med" "$s_med" \
    "$(echo "$s_med / $n_med" | bc -l)"
printf 'peak RSS: nbdcopy %d KiB, sendense-sna %d KiB\n' "$n_rss" "$s_rss"

# Incremental: the base copy gets a bitmap, ~1 % of the disk changes, and only that moves.
qemu-img bitmap --add "$work/base.qcow2" inc
bytes=$(numfmt --from=iec "$size")
chunks=$((bytes / 100 / 1048576))
cmds=()
for k in $(seq 0 $((chunks - 1))); do
    off=$(( (k * 7919 % (bytes / 1048576)) * 1048576 ))
    cmds+=(-c "write -P $((k % 250 + 1)) $off 1M")
done
qemu-io -f qcow2 "${cmds[@]}" "$work/base.qcow2" >/dev/null
# The overlay's backing file only has to exist for the timing; its content does not matter.
qemu-img create -q -f qcow2 "$work/full.qcow2" "$size"
qemu-img create -q -f qcow2 -b "$work/full.qcow2" -F qcow2 "$work/inc.qcow2"
qemu-nbd -r -f qcow2 -x src -k "$work/inc-src.sock" -B inc --shared=8 --persistent "$work/base.qcow2" >/dev/null 2>&1 &
pids+=($!)
while [ ! -S "$work/inc-src.sock" ]; do sleep 0.02; done
start_target "$work/inc.qcow2" inc
r=$(measure "$sna" -q copy --bitmap inc "nbd+unix:///src?socket=$work/inc-src.sock" "$dst")
stop_target
inc_s=${r% *}
printf 'incremental (%d MiB changed, %.1f %%): %.2f s = %.1f %% of the full copy, peak RSS %d KiB\n' \
    "$chunks" "$(echo "$chunks * 1048576 * 100 / $bytes" | bc -l)" "$inc_s" \
    "$(echo "$inc_s * 100 / $s_med" | bc -l)" "${r#* }"
