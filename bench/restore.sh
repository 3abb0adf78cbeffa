#!/usr/bin/env bash
# Benchmark: `sendense restore` of the top of a backup chain (a full and an incremental) against
# the reference tools, alternating, in the same run:
#   - to a raw and to a qcow2 file: `qemu-img convert` of the same chain, timed with its output
#     synced (the durability a restore gives) and as it returns;
#   - into an NBD target (qemu-nbd serving a fresh raw file): `nbdcopy` from a qemu-nbd of the
#     chain into the same kind of target, timed with and without starting that qemu-nbd.
# Each with and without checking the digests (--no-verify). Two chains: a large one (a disk of
# DISK_SIZE with 40 % random data, then 256 MiB changed) and a small one (a 1 TiB disk with
# 64 MiB of data, then a 64 MiB incremental), where the fixed cost of a restore dominates.
# Medians of RUNS runs; the reference, verified and --no-verify restores go first in turns. Also
# the median of each round's own ratio (a restore against the reference of its round), which a
# machine whose speed drifts during the run moves less.
#   bench/restore.sh [DISK_SIZE] [RUNS]     defaults: 4G 5
set -euo pipefail
size=${1:-4G}
runs=${2:-5}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-restore.XXXXXX)
gen=""
server=""
src=""
cleanup() {
    for p in $gen $server $src; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export SENDENSE_HOME="$work/state"
"$sendense" init >/dev/null
"$sendense" repo add local --path "$work/repo" >/dev/null

nbdkit -f --exit-with-parent -U "$work/gen.sock" sparse-random size="$size" percent=40 seed=11 >/dev/null 2>&1 &
gen=$!
while [ ! -S "$work/gen.sock" ]; do sleep 0.05; done
qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen.sock" "$work/large.qcow2"
kill "$gen"; wait "$gen" 2>/dev/null || true; gen=""
qemu-img create -q -f qcow2 "$work/small.qcow2" 1T
qemu-io -f qcow2 -c "write -P 0x17 0 64M" "$work/small.qcow2" >/dev/null

# One VM per chain: a full, a change, an incremental; prints the top backup's id and image.
chain() {
    local vm=$1 disk=$2 change=$3
    "$sendense" vm add "$vm" --disk "$disk" >/dev/null
    "$sendense" -q backup start "$vm" >/dev/null
    qemu-io -f qcow2 -c "$change" "$disk" >/dev/null
    "$sendense" -q backup start "$vm" >/dev/null
    "$sendense" backup list --vm "$vm" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'
}
large=$(chain large "$work/large.qcow2" "write -P 0x42 1G 256M")
small=$(chain small "$work/small.qcow2" "write -P 0x43 512G 64M")
top_of() { "$sendense" backup show "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["disks"][0]["file"])'; }
virtual_size() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# The median of the per-round ratios of the times in file $1 to those in file $2 (line by line):
# each restore against the reference of its own round, so a machine that drifts during the run
# moves both sides of a ratio.
ratios() { paste "$1" "$2" | awk '{print $1 / $2}' | median; }
since() { echo "$(now) - $1" | bc -l; }
# Waits (at most 30 s) for the socket $1 of the process $2.
await_socket() {
    local i=0
    while [ ! -S "$1" ]; do
        kill -0 "$2" 2>/dev/null && [ $i -lt 3000 ] || { echo "no socket $1"; exit 1; }
        sleep 0.01; i=$((i + 1))
    done
}

# A fresh raw target of the disk's size served writable by qemu-nbd on $work/target.sock.
serve_target() {
    rm -f "$work/target.raw" "$work/target.sock"
    truncate -s "$1" "$work/target.raw"
    qemu-nbd -f raw -t -e 16 -k "$work/target.sock" --cache=writeback "$work/target.raw" &
    server=$!
    await_socket "$work/target.sock" "$server"
}
stop_target() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; sync "$work/target.raw"; }

for which in large small; do
    id=${!which}
    top=$(top_of "$id")
    vsize=$(virtual_size "$top")
    for fmt in raw qcow2; do
        : >"$work/t_q"; : >"$work/t_qs"; : >"$work/t_s"; : >"$work/t_n"
        reference() {
            t0=$(now); qemu-img convert -O "$fmt" "$top" "$work/q.$fmt"; since "$t0" >>"$work/t_q"
            # qemu-img convert writes with cache=unsafe and never syncs; a restore returns only
            # once its file is durable.
            sync "$work/q.$fmt"; since "$t0" >>"$work/t_qs"
        }
        for n in $(seq "$runs"); do
            # The three in turns: reference first, then verified, then not; or the other way.
            modes="verified no-verify"
            [ $((n % 2)) = 1 ] && reference || modes="no-verify verified"
            for mode in $modes; do
                extra=""; out="$work/t_s"
                [ "$mode" = no-verify ] && { extra=--no-verify; out="$work/t_n"; }
                t0=$(now); "$sendense" -q restore "$id" --disk 2000 --to "$work/$mode.$fmt" --format "$fmt" --force $extra >/dev/null; since "$t0" >>"$out"
            done
            [ $((n % 2)) = 0 ] && reference
            for mode in $modes; do
                qemu-img compare -q "$work/q.$fmt" "$work/$mode.$fmt" || { echo "restores differ!"; exit 1; }
                rm -f "$work/$mode.$fmt"
            done
            rm -f "$work/q.$fmt"
        done
        q=$(median <"$work/t_q"); qs=$(median <"$work/t_qs"); s=$(median <"$work/t_s"); n=$(median <"$work/t_n")
        printf '%-5s to %-5s: qemu-img convert %.3f s (%.3f s synced); sendense %.3f s verified, ratio %.3f to synced (%.3f); %.3f s --no-verify, ratio %.3f (%.3f); per round: %.3f verified, %.3f --no-verify\n' \
            "$which" "$fmt" "$q" "$qs" "$s" "$(echo "$s / $qs" | bc -l)" "$(echo "$s / $q" | bc -l)" \
            "$n" "$(echo "$n / $qs" | bc -l)" "$(echo "$n / $q" | bc -l)" \
            "$(ratios "$work/t_s" "$work/t_qs")" "$(ratios "$work/t_n" "$work/t_qs")"
    done
    # Into an NBD target.
    : >"$work/t_c"; : >"$work/t_cs"; : >"$work/t_s"; : >"$work/t_n"
    for n in $(seq "$runs"); do
        serve_target "$vsize"
        t0=$(now)
        qemu-nbd -r -t -e 16 -f qcow2 -k "$work/chain.sock" "$top" &
        src=$!
        await_socket "$work/chain.sock" "$src"
        t1=$(now)
        # An NBD target is an existing disk: both zero what the restore point holds as zeroes.
        nbdcopy --flush "nbd+unix:///?socket=$work/chain.sock" "nbd+unix:///?socket=$work/target.sock"
        since "$t1" >>"$work/t_c"; since "$t0" >>"$work/t_cs"
        kill "$src" 2>/dev/null || true; wait "$src" 2>/dev/null || true; src=""; rm -f "$work/chain.sock"
        stop_target; mv "$work/target.raw" "$work/ref.raw"
        modes="verified no-verify"; [ $((n % 2)) = 0 ] && modes="no-verify verified"
        for mode in $modes; do
            serve_target "$vsize"
            extra=""; out="$work/t_s"
            [ "$mode" = no-verify ] && { extra=--no-verify; out="$work/t_n"; }
            t0=$(now)
            "$sendense" -q restore "$id" --disk 2000 --to "nbd+unix:///?socket=$work/target.sock" $extra >/dev/null
            since "$t0" >>"$out"
            stop_target
            qemu-img compare -q -f raw -F raw "$work/ref.raw" "$work/target.raw" || { echo "NBD restores differ!"; exit 1; }
        done
        rm -f "$work/ref.raw" "$work/target.raw"
    done
    c=$(median <"$work/t_c"); cs=$(median <"$work/t_cs"); s=$(median <"$work/t_s"); n=$(median <"$work/t_n")
    printf '%-5s to NBD  : nbdcopy %.3f s (%.3f s with starting its qemu-nbd); sendense %.3f s verified, ratio %.3f (%.3f); %.3f s --no-verify, ratio %.3f (%.3f); per round: %.3f verified, %.3f --no-verify\n' \
        "$which" "$c" "$cs" "$s" "$(echo "$s / $c" | bc -l)" "$(echo "$s / $cs" | bc -l)" \
        "$n" "$(echo "$n / $c" | bc -l)" "$(echo "$n / $cs" | bc -l)" \
        "$(ratios "$work/t_s" "$work/t_c")" "$(ratios "$work/t_n" "$work/t_c")"
done
