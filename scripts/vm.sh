# Shell helpers for the demo and the benchmarks (source this file).

# stop_vm PID: stops the VM start_vm started and waits (up to 5 s) until it is gone.
stop_vm() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
}

# start_vm DIR DISK0 DISK1: starts a QEMU VM without a guest OS whose two qcow2 disks are virtio
# devices vd0 and vd1, with QMP on DIR/qmp.sock (for Sendense) and DIR/ctl.sock (for guest
# writes); KVM where available, else TCG. Prints its pid; its messages go to DIR/qemu.log.
start_vm() {
    qemu-system-x86_64 -accel kvm -accel tcg -display none -nodefaults -m 64 \
        -qmp "unix:$1/qmp.sock,server=on,wait=off" -qmp "unix:$1/ctl.sock,server=on,wait=off" \
        -blockdev "driver=file,node-name=f0,filename=$2" \
        -blockdev driver=qcow2,node-name=disk0,file=f0 -device virtio-blk-pci,drive=disk0,id=vd0 \
        -blockdev "driver=file,node-name=f1,filename=$3" \
        -blockdev driver=qcow2,node-name=disk1,file=f1 -device virtio-blk-pci,drive=disk1,id=vd1 \
        -daemonize -pidfile "$1/qemu.pid" 2>"$1/qemu.log" || { cat "$1/qemu.log" >&2; return 1; }
    cat "$1/qemu.pid"
}

# Waits up to 30 s for a server's Unix socket; fails when none appears.
wait_for() {
    for _ in $(seq 600); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "no server came up at $1" >&2
    return 1
}
