#!/usr/bin/env bash
# Benchmark: retention on real chains of an image VM, against QEMU's own tools in the same run.
#   1. Deleting a full whose 1 % incremental depends on it (the incremental is merged into it)
#      against `qemu-img commit -d` of copies of the same two images, followed by a sync.
#   2. `backup prune --keep-last 7` of a 30-backup chain (23 merges).
#   3. `backup verify` of the top of a LINKS-link chain (every link) against `qemu-img check` of
#      each of its images opened without its backing chain, one after the other.
#   bench/retention.sh [DISK_SIZE] [RUNS] [LINKS]      defaults: 4G 3 500
#   PARTS="1 3" runs only those parts; CHANGE_PCT (default 1) sizes the incremental of part 1.
set -euo pipefail
. "$(dirname "$0")/../scripts/vm.sh"
size=${1:-4G}
runs=${2:-3}
links=${3:-500}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-retention.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
bytes=$(numfmt --from=iec "$size")
parts=${PARTS:-1 2 3}
pct=${CHANGE_PCT:-1}
part() { [[ " $parts " == *" $1 "* ]]; }

now() { date +%s.%N; }
seconds() { echo "$2 - $1" | bc; }

# A fresh hub in $1/state with repository `r` in $1/repo and VM `vm` on image $2.
hub() {
    export SENDENSE_HOME="$1/state"
    "$sendense" init -q >/dev/null
    "$sendense" repo add r --path "$1/repo" >/dev/null
    "$sendense" vm add vm --disk "$2" >/dev/null
}

# The newest backup's id.
newest() { "$sendense" backup list --vm vm --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'; }

if part 1; then
echo "== 1. merging a ${pct} % incremental into a ${size} full, against qemu-img commit =="
nbdkit -f --exit-with-parent -U "$work/gen.sock" sparse-random size="$size" percent=40 seed=11 >/dev/null 2>&1 &
pids+=($!)
wait_for "$work/gen.sock"
qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen.sock" "$work/disk-base.qcow2"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
change=$((bytes * pct / 100))
for run in $(seq "$runs"); do
    state="$work/m$run"
    cp --sparse=always "$work/disk-base.qcow2" "$work/disk.qcow2"
    hub "$state" "$work/disk.qcow2"
    "$sendense" backup start vm -q
    full=$(newest)
    # pct % of the disk in 1 MiB writes spread over it.
    step=$((bytes / (change / 1048576)))
    cmds=()
    for off in $(seq 0 "$step" $((bytes - 1048576))); do cmds+=(-c "write -P $((run + 1)) $off 1M"); done
    qemu-io -f qcow2 "${cmds[@]}" "$work/disk.qcow2" >/dev/null
    "$sendense" backup start vm -q
    inc=$(newest)
    mkdir -p "$work/ref$run"
    cp --sparse=always "$state/repo/vm/2000/$full.qcow2" "$work/ref$run/$full.qcow2"
    cp --sparse=always "$state/repo/vm/2000/$inc.qcow2" "$work/ref$run/$inc.qcow2"
    sync
    # Both pairs in the page cache (the backups were written with O_DIRECT, the copies were
    # not), and the order alternates.
    cat "$work/ref$run"/*.qcow2 "$state/repo/vm/2000"/*.qcow2 >/dev/null
    ref_commit() { (cd "$work/ref$run" && qemu-img commit -q -d "$inc.qcow2" && sync -f "$full.qcow2"); }
    ours_delete() { "$sendense" backup delete "$full" >/dev/null; }
    timed() { local a b; a=$(now); "$@"; b=$(now); seconds "$a" "$b"; }
    if [ $((run % 2)) = 1 ]; then
        ref=$(timed ref_commit); ours=$(timed ours_delete)
    else
        ours=$(timed ours_delete); ref=$(timed ref_commit)
    fi
    qemu-img compare -q "$work/ref$run/$full.qcow2" "$state/repo/vm/2000/$inc.qcow2"
    printf 'run %d: qemu-img commit -d + sync %.2f s, sendense backup delete (merge) %.2f s, ratio %.2f\n' \
        "$run" "$ref" "$ours" "$(echo "$ours / $ref" | bc -l)"
    rm -rf "$state" "$work/ref$run"
done

fi

if part 2; then
echo "== 2. backup prune --keep-last 7 of a 30-backup chain (256 MiB disk, 1 MiB changed per backup) =="
state="$work/p"
qemu-img create -q -f qcow2 "$work/small.qcow2" 256M
qemu-io -f qcow2 -c "write -P 1 0 128M" "$work/small.qcow2" >/dev/null
hub "$state" "$work/small.qcow2"
for i in $(seq 0 29); do
    qemu-io -f qcow2 -c "write -P $((i + 2)) $((i * 4))M 1M" "$work/small.qcow2" >/dev/null
    SENDENSE_TEST_NOW=$(date -u -d "2026-01-01 + $i days" +%Y-%m-%dT%H:%M:%SZ) "$sendense" backup start vm -q
done
t0=$(now)
"$sendense" backup prune --keep-last 7 >/dev/null
t1=$(now)
printf 'prune 30 -> 7: %.2f s (%d backups left)\n' "$(seconds "$t0" "$t1")" \
    "$("$sendense" backup list --vm vm --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
"$sendense" backup verify --vm vm -q >/dev/null && echo "verify of what is left: ok"

fi

if part 3; then
echo "== 3. backup verify of the top of a ${links}-link chain, against qemu-img check of each image alone =="
state="$work/v"
qemu-img create -q -f qcow2 "$work/chain.qcow2" 64M
hub "$state" "$work/chain.qcow2"
for i in $(seq 0 $((links - 1))); do
    qemu-io -f qcow2 -c "write -P $((i % 250 + 1)) $(( (i * 64) % 65536 ))k 64k" "$work/chain.qcow2" >/dev/null
    "$sendense" backup start vm -q
done
top=$(newest)
for run in $(seq "$runs"); do
    t0=$(now)
    for f in "$state"/repo/vm/2000/*.qcow2; do
        qemu-img check -q "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$f\"},\"backing\":null}"
    done
    t1=$(now)
    "$sendense" backup verify "$top" -q >/dev/null
    t2=$(now)
    ref=$(seconds "$t0" "$t1"); ours=$(seconds "$t1" "$t2")
    printf 'run %d: qemu-img check x %d %.2f s, sendense backup verify %.2f s (%.1f ms per link), ratio %.2f\n' \
        "$run" "$links" "$ref" "$ours" "$(echo "$ours * 1000 / $links" | bc -l)" "$(echo "$ours / $ref" | bc -l)"
done
fi
