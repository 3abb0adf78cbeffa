#!/usr/bin/env bash
# Sendense demo on the embedded default: a local repository and a local demo VM, all under a
# temporary directory that is removed at the end (KEEP=1 keeps it).
set -euo pipefail

bin_dir=${1:-target/release}
sendense="$(cd "$bin_dir" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-demo.XXXXXX)
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

export SENDENSE_HOME="$work/state"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ sendense %s\n' "$*"; "$sendense" "$@"; }

step "Initialise a state directory (catalog + config) in $SENDENSE_HOME"
run init

step "Create a repository under the demo directory"
run repo add local --path "$work/repo"
run repo test local

step "Generate a demo VM with two disks (QCOW2 2 GiB, raw 256 MiB) and write some data"
qemu-img create -q -f qcow2 "$work/demo-os.qcow2" 2G
qemu-img create -q -f raw "$work/demo-data.raw" 256M
qemu-io -f qcow2 -c "write -P 0xab 0 64M" -c "write -P 0x11 1G 16M" "$work/demo-os.qcow2" >/dev/null
qemu-io -f raw -c "write -P 0x5a 0 8M" "$work/demo-data.raw" >/dev/null

step "Register the VM: disks get keys 2000, 2001 in device order"
run vm add demo-vm --disk "$work/demo-os.qcow2" --disk "$work/demo-data.raw"
run vm show demo-vm
run vm show demo-vm --json

step "Repositories and jobs"
run repo list
run job list

echo
echo "Demo finished."
