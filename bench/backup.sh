#!/usr/bin/env bash
# Benchmark: a full backup of a two-disk VM (a few GiB of random data each, the rest sparse)
# by `sendense backup start` against the same work done by hand (qemu-img create + qemu-nbd +
# nbdcopy per disk, both disks at once), alternating; then incrementals with ~1 % changed.
# Twice: a stopped VM (its image files) and a live VM (QEMU over QMP, the same kind of disks).
#   bench/backup.sh [DISK_SIZE] [RUNS]     defaults: 4G 3      LIVE=0 skips the live VM
set -euo pipefail
. "$(dirname "$0")/../scripts/vm.sh"
size=${1:-4G}
runs=${2:-3}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-backup.XXXXXX)
pids=()      # processes running now that this script started (by pid)
qemu_pid=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$qemu_pid" ]; then stop_vm "$qemu_pid"; fi
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export SENDENSE_HOME="$work/state"
bytes=$(numfmt --from=iec "$size")

# Disk PREFIX-0 and PREFIX-1: 40 % random data each (seeded), the rest sparse.
make_disks() {
    for i in 0 1; do
        nbdkit -f --exit-with-parent -U "$work/gen$i.sock" sparse-random size="$size" percent=40 seed=$((7 + i)) >/dev/null 2>&1 &
        pids+=($!)
        wait_for "$work/gen$i.sock"
        qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen$i.sock" "$1-$i.qcow2"
        kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
        unset 'pids[-1]'
        rm -f "$work/gen$i.sock"
    done
}

# The full backup done by hand: a read-only qemu-nbd of each disk, a fresh qcow2 exported by
# qemu-nbd, nbdcopy between them; both disks at once. With `shared`, the source files are
# opened without taking their lock (a running QEMU holds it).
by_hand() {
    local n=$1 disks=$2 lock=${3:-locked}
    for i in 0 1; do
        rm -f "$work/s$i.sock" "$work/t$i.sock"
        local src=(-f qcow2 "$disks-$i.qcow2")
        if [ "$lock" = shared ]; then
            src=(--image-opts "driver=qcow2,file.driver=file,file.filename=$disks-$i.qcow2,file.locking=off")
        fi
        qemu-nbd -r -x src -k "$work/s$i.sock" --shared=8 --persistent "${src[@]}" >/dev/null 2>&1 &
        pids+=($!)
        qemu-img create -q -f qcow2 "$work/hand$n-$i.qcow2" "$size"
        qemu-nbd -f qcow2 -x t -k "$work/t$i.sock" --shared=8 --persistent --cache=none --aio=threads \
            "$work/hand$n-$i.qcow2" >/dev/null 2>&1 &
        pids+=($!)
    done
    for i in 0 1; do wait_for "$work/s$i.sock"; wait_for "$work/t$i.sock"; done
    local copies=()
    for i in 0 1; do
        nbdcopy --destination-is-zero --flush "nbd+unix:///src?socket=$work/s$i.sock" "nbd+unix:///t?socket=$work/t$i.sock" &
        copies+=($!)
    done
    for c in "${copies[@]}"; do wait "$c"; done
    kill "${pids[@]}"
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    rm -f "$work/hand$n-"*.qcow2
}

# Waits (up to a minute) until the storage has written back what the full backups left: right
# after ten multi-GiB copies the disk is still busy and would time its own write-back.
settle() {
    sync
    local waited=0
    while [ "$waited" -lt 60 ]; do
        local some
        some=$(awk '/^some/ {split($2, a, "="); print int(a[2])}' /proc/pressure/io 2>/dev/null || echo 0)
        [ "${some:-0}" -lt 2 ] && break
        sleep 1; waited=$((waited + 1))
    done
    echo "(storage settled after ${waited} s)"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

# ~1 % of each disk changes: 1 MiB writes at spread offsets, pattern and places varying with N.
# Printed as qemu-io commands, one per line: "DISK write -P PATTERN OFFSET 1M".
changes() {
    local n=$1 chunks=$((bytes / 100 / 1048576 > 0 ? bytes / 100 / 1048576 : 1))
    for i in 0 1; do
        for k in $(seq 0 $((chunks - 1))); do
            echo "$i write -P $(((k + n) % 250 + 1)) $(( ((k * 7919 + n * 104729) % (bytes / 1048576)) * 1048576 )) 1M"
        done
    done
}
change_files() {
    local disks=$1 n=$2
    for i in 0 1; do
        local cmds=()
        while read -r _ op rest; do cmds+=(-c "$op $rest"); done < <(changes "$n" | grep "^$i ")
        qemu-io -f qcow2 "${cmds[@]}" "$disks-$i.qcow2" >/dev/null
    done
}
# The guest writes through each virtio disk (HMP qemu-io over the VM's second QMP socket).
change_guest() {
    changes "$2" | python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
def call(c):
    f.write(json.dumps(c) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" not in r:
            # HMP reports its own failures as text in "return".
            if "error" in r or r.get("return"): sys.exit("guest write failed: %s" % r)
            return r
call({"execute": "qmp_capabilities"})
for line in sys.stdin:
    disk, cmd = line.split(" ", 1)
    call({"execute": "human-monitor-command",
          "arguments": {"command-line": "qemu-io -d vd%s/virtio-backend \"%s\"" % (disk, cmd.strip())}})
' "$work/ctl.sock"
}

# bench VM DISKS CHANGE [shared]: fulls against by hand, then incrementals.
bench() {
    local vm=$1 disks=$2 change=$3 lock=${4:-locked}
    : >"$work/t_sendense"; : >"$work/t_hand"; : >"$work/t_inc"
    for n in $(seq "$runs"); do
        sync
        t0=$(now); by_hand "$n" "$disks" "$lock"; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/t_hand"
        sync
        t0=$(now); "$sendense" -q backup start "$vm" --full >/dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/t_sendense"
        printf 'run %d: by hand %.2f s, sendense %.2f s\n' "$n" "$(tail -1 "$work/t_hand")" "$(tail -1 "$work/t_sendense")"
    done
    h=$(median <"$work/t_hand"); s=$(median <"$work/t_sendense")
    printf 'full backup median: by hand %.2f s, sendense %.2f s, ratio %.3f\n' "$h" "$s" "$(echo "$s / $h" | bc -l)"
    settle
    for n in $(seq "$runs"); do
        "$change" "$disks" "$n"
        sync
        t0=$(now); "$sendense" -q backup start "$vm" --incremental >/dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$work/t_inc"
        printf 'incremental %d: %.2f s\n' "$n" "$(tail -1 "$work/t_inc")"
    done
    inc=$(median <"$work/t_inc")
    printf 'incremental median (%d MiB changed per disk, 1 %%): %.2f s = %.1f %% of the full backup\n' \
        "$((bytes / 100 / 1048576))" "$inc" "$(echo "$inc * 100 / $s" | bc -l)"
}

"$sendense" init >/dev/null
"$sendense" repo add local --path "$work/repo" >/dev/null
echo "Two qcow2 disks of $size per VM, 40 % random data each; repository on $(df --output=fstype "$work" | tail -1)"

echo "== Stopped VM (its image files)"
make_disks "$work/disk"
"$sendense" vm add bench --disk "$work/disk-0.qcow2" --disk "$work/disk-1.qcow2" >/dev/null
bench bench "$work/disk" change_files

[ "${LIVE:-1}" = 0 ] && exit 0
echo "== Live VM (QEMU over QMP; by hand reads its files with qemu-nbd, file locking off)"
# A fresh state and repository: the first VM's backups and disks would only take space.
rm -rf "$work/state" "$work/repo" "$work"/disk-*.qcow2
"$sendense" init >/dev/null
"$sendense" repo add local --path "$work/repo" >/dev/null
make_disks "$work/live"
qemu_pid=$(start_vm "$work" "$work/live-0.qcow2" "$work/live-1.qcow2")
"$sendense" vm add live --qmp "$work/qmp.sock" >/dev/null
bench live "$work/live" change_guest shared
