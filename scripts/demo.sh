#!/usr/bin/env bash
# Sendense demo on the embedded default: a local repository and a live demo VM (QEMU, no guest
# OS) with two disks, all under a temporary directory that is removed at the end (KEEP=1 keeps
# it). Full backup, guest writes, incremental backup, list.
set -euo pipefail
. "$(dirname "$0")/vm.sh"

bin_dir=${1:-target/release}
sendense="$(cd "$bin_dir" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-demo.XXXXXX)
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ]; then stop_vm "$qemu_pid"; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

export SENDENSE_HOME="$work/state"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ sendense %s\n' "$*"; "$sendense" "$@"; }
# A guest write through the VM's virtio disk (HMP qemu-io over the VM's second QMP socket).
guest() {
    python3 - "$work/ctl.sock" "$1" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in [{"execute": "qmp_capabilities"},
            {"execute": "human-monitor-command",
             "arguments": {"command-line": 'qemu-io -d vd%s/virtio-backend "%s"' % (sys.argv[2], sys.argv[3])}}]:
    f.write(json.dumps(cmd) + "\n"); f.flush()
    while "event" in json.loads(f.readline()): pass
PY
}

step "Initialise a state directory (catalog + config) in $SENDENSE_HOME"
run init

step "Create a repository under the demo directory"
run repo add local --path "$work/repo"

step "Start a demo VM: QEMU with two virtio disks (qcow2, 1 GiB and 512 MiB), no guest OS"
qemu-img create -q -f qcow2 "$work/demo-os.qcow2" 1G
qemu-img create -q -f qcow2 "$work/demo-data.qcow2" 512M
qemu-io -f qcow2 -c "write -P 0xab 0 64M" -c "write -P 0x11 512M 16M" "$work/demo-os.qcow2" >/dev/null
qemu-io -f qcow2 -c "write -P 0x5a 0 8M" "$work/demo-data.qcow2" >/dev/null
qemu_pid=$(start_vm "$work" "$work/demo-os.qcow2" "$work/demo-data.qcow2")

step "Register the running VM through its QMP socket: disks get keys 2000, 2001"
run vm add demo-vm --qmp "$work/qmp.sock"

step "Full backup: one consistent snapshot of both disks, only allocated data moves"
run backup start demo-vm

step "The guest writes: 4 MiB on the first disk, 1 MiB on the second"
guest 0 "write -P 0xcd 128M 4M"
guest 1 "write -P 0xef 64M 1M"

step "Incremental backup: only the changed blocks move"
run backup start demo-vm

step "Backups, the VM and the jobs"
run backup list
run vm show demo-vm
run job list

step "Verify both backups: qemu-img check of the chain and a full read against the recorded digests"
run backup verify --vm demo-vm

step "Restore both points as standalone raw images (thin: holes stay holes)"
full_id=$("$sendense" backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["id"])')
inc_id=$("$sendense" backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
run restore "$full_id" --all --to "$work/restore-full" --format raw
run restore "$inc_id" --all --to "$work/restore-inc" --format raw
du -h --apparent-size "$work/restore-inc/demo-vm-disk-2000.raw" | sed 's/\t.*/ apparent size/'
du -h "$work/restore-inc/demo-vm-disk-2000.raw" | sed 's/\t.*/ allocated/'

step "Shut the VM down cleanly and compare: the latest restore equals the VM's disks"
guest_quit() {
    python3 - "$work/ctl.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in [{"execute": "qmp_capabilities"}, {"execute": "quit"}]:
    f.write(json.dumps(cmd) + "\n"); f.flush()
    while "event" in json.loads(f.readline() or '{"x":1}'): pass
PY
}
guest_quit
while kill -0 "$qemu_pid" 2>/dev/null; do sleep 0.1; done
qemu-img compare -f raw -F qcow2 "$work/restore-inc/demo-vm-disk-2000.raw" "$work/demo-os.qcow2"
qemu-img compare -f raw -F qcow2 "$work/restore-inc/demo-vm-disk-2001.raw" "$work/demo-data.qcow2"
echo "And the full backup's point differs exactly where the guest wrote afterwards:"
qemu-img compare -f raw -F qcow2 "$work/restore-full/demo-vm-disk-2000.raw" "$work/demo-os.qcow2" || true

echo
echo "Demo finished."
