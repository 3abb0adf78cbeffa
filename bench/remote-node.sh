#!/usr/bin/env bash
# Benchmark: a full backup of a live VM on a remote node — two network namespaces joined by a
# veth pair, a real OpenSSH sshd and the VM in the node's, `sendense` in the hub's — against
# nbdcopy of the same disk through OpenSSH `ssh -L` and through plain TCP between the
# namespaces, in the same run. Once at RTT_MS of round trip (a delay relay in the hub's
# namespace, TCP ending at it on both sides) and once without delay. Reports MiB/s and the CPU
# seconds per GiB moved on each side (hub: the sendense process tree, or nbdcopy with its
# qemu-nbd target plus the ssh client; node: sshd with everything its sessions ran, plus QEMU or
# the source qemu-nbd). Needs root (network namespaces).
#   bench/remote-node.sh [DATA] [RUNS] [RTT_MS]     defaults: 4G 3 20
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
. "$(dirname "$0")/../scripts/vm.sh"
size=${1:-4G}
runs=${2:-3}
rtt=${3:-20}
bin=${BIN:-target/release}
bin="$(cd "$bin" && pwd)"
sendense="$bin/sendense"
relay="$bin/sendense-delay-relay"
[ -x "$relay" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/remote-node.sh needs root (network namespaces)" >&2; exit 1; }
work=$(mktemp -d /tmp/sendense-bench-node.XXXXXX)
chmod 755 "$work"
tag=$$
hub=sdbhub$tag node=sdbnode$tag
hub_addr=10.78.0.1 node_addr=10.78.0.2
pids=()      # processes running now that this script started (by pid)
qemu_pid=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$qemu_pid" ]; then stop_vm "$qemu_pid"; fi
    wait 2>/dev/null || true
    ip netns del "$hub" 2>/dev/null || true
    ip netns del "$node" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# What the command that failed said.
trap '[ -s "$work/err" ] && cat "$work/err" >&2' ERR
bytes=$(numfmt --from=iec "$size")
# forget PID...: these ended; cleanup does not signal them (or a process that reused a pid).
forget() {
    local kept=() p q
    for p in "${pids[@]}"; do
        for q in "$@"; do [ "$p" = "$q" ] && continue 2; done
        kept+=("$p")
    done
    pids=("${kept[@]}")
}
in_hub() { ip netns exec "$hub" "$@"; }
in_node() { ip netns exec "$node" "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
# CPU seconds a process used, itself and its waited-for descendants (utime stime cutime cstime).
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13 + $14 + $15) / hz}' "/proc/$1/stat"
}

# The two hosts.
ip netns add "$hub"; ip netns add "$node"
ip link add "vbh$tag" type veth peer name "vbn$tag"
ip link set "vbh$tag" netns "$hub"; ip link set "vbn$tag" netns "$node"
in_hub ip addr add "$hub_addr/30" dev "vbh$tag"; in_node ip addr add "$node_addr/30" dev "vbn$tag"
for ns in "$hub" "$node"; do ip -n "$ns" link set lo up; done
in_hub ip link set "vbh$tag" up; in_node ip link set "vbn$tag" up

# The node: sshd with a host key and the hub's key, its commands' state in node-state.
mkdir -p "$work/sshd" /run/sshd
ssh-keygen -q -t ed25519 -N "" -f "$work/sshd/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$work/sshd/client_key"
cp "$work/sshd/client_key.pub" "$work/sshd/authorized_keys"
cat >"$work/sshd/config" <<EOF
Port 22
ListenAddress $node_addr
HostKey $work/sshd/host_key
AuthorizedKeysFile $work/sshd/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
SetEnv SENDENSE_SNA_STATE=$work/node-state
EOF
ip netns exec "$node" /usr/sbin/sshd -D -f "$work/sshd/config" &
sshd_pid=$!
pids+=("$sshd_pid")
for _ in $(seq 100); do in_hub bash -c "echo >/dev/tcp/$node_addr/22" 2>/dev/null && break; sleep 0.05; done
fingerprint=$(ssh-keygen -l -E sha256 -f "$work/sshd/host_key.pub" | awk '{print $2}')

# The VM on the node: one disk of DATA random data (and a small empty one).
nbdkit -f --exit-with-parent -U "$work/gen.sock" sparse-random size="$size" percent=100 seed=11 >/dev/null 2>&1 &
pids+=($!)
wait_for "$work/gen.sock"
qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen.sock" "$work/vm-0.qcow2"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
qemu-img create -q -f qcow2 "$work/vm-1.qcow2" 64M
qemu_pid=$(in_node bash -c ". '$(pwd)/scripts/vm.sh'; start_vm '$work' '$work/vm-0.qcow2' '$work/vm-1.qcow2'")
# Its vCPUs stopped (a guest without an OS only spins in its firmware, taking a core's share
# from every method measured); QEMU serves its disks as for a running guest.
python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw"); f.readline()
for c in ("qmp_capabilities", "stop"):
    f.write(json.dumps({"execute": c}) + "\n"); f.flush()
    while "event" in json.loads(f.readline()): pass
' "$work/ctl.sock"
mib=$(echo "$bytes / 1048576" | bc -l)
gib=$(echo "$bytes / 1073741824" | bc -l)
echo "One disk of $size random data on the node; runs $runs; sendense $("$sendense" --version)"

# start_relay PORT: a relay on the hub's loopback to NODE_ADDR:PORT with DELAY; its port in
# relay_port.
start_relay() {
    ip netns exec "$hub" "$relay" --listen 127.0.0.1:0 --to "$node_addr:$1" --rtt-ms "$delay" >"$work/relay.out" &
    pids+=($!)
    for _ in $(seq 100); do grep -q listening "$work/relay.out" 2>/dev/null && break; sleep 0.05; done
    relay_port=$(awk '{print $2}' "$work/relay.out")
}

# One configuration: DELAY ms of round trip (0: straight over the veth pair).
configuration() {
    delay=$1
    local ssh_host=$node_addr ssh_port=22 nbd_host=$node_addr nbd_port=10809
    if [ "$delay" -gt 0 ]; then
        start_relay 22; ssh_host=127.0.0.1; ssh_port=$relay_port
        start_relay 10809; nbd_host=127.0.0.1; nbd_port=$relay_port
    fi
    echo "== Round trip ${delay} ms (+ the veth pair's)"
    export SENDENSE_HOME="$work/state"
    rm -rf "$work/state" "$work/repo"
    in_hub "$sendense" init >/dev/null
    in_hub "$sendense" repo add local --path "$work/repo" >/dev/null
    in_hub "$sendense" node add n --ssh "root@$ssh_host:$ssh_port" --identity "$work/sshd/client_key" \
        --host-key "$fingerprint" --sna-path "$bin/sendense-sna" >/dev/null
    in_hub "$sendense" vm add vm --node n --qmp "$work/qmp.sock" >/dev/null
    : >"$work/m_sendense"; : >"$work/m_sshl"; : >"$work/m_tcp"
    for n in $(seq "$runs"); do
        # Sendense: the node pushes through forwards of the SSH connection.
        sync
        local s0 q0 h t0 t1
        s0=$(cpu_of "$sshd_pid"); q0=$(cpu_of "$qemu_pid")
        TIMEFORMAT='%U %S'
        t0=$(now)
        h=$( { time in_hub "$sendense" backup start vm --full --json >"$work/backup.json" 2>"$work/err"; } 2>&1 | awk '{print $1 + $2}')
        t1=$(now)
        sleep 0.5
        echo "$(echo "$t1 - $t0" | bc -l) $h $(echo "$(cpu_of "$sshd_pid") - $s0 + $(cpu_of "$qemu_pid") - $q0" | bc -l)" >>"$work/m_sendense"
        # Only its time counts: the backup goes again, not to fill the disk.
        in_hub "$sendense" -q backup delete "$(tail -1 "$work/backup.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backup"])')" >/dev/null

        # The source served by qemu-nbd on the node (the VM holds the image's lock: not taken).
        local opts="driver=qcow2,file.driver=file,file.filename=$work/vm-0.qcow2,file.locking=off"
        # nbdcopy through ssh -L to the node's qemu-nbd on a Unix socket.
        rm -f "$work/src.sock" "$work/out.qcow2"
        ip netns exec "$node" qemu-nbd -r -x src -k "$work/src.sock" --shared=8 --persistent --image-opts "$opts" >/dev/null 2>&1 &
        local qnbd=$!; pids+=("$qnbd")
        wait_for "$work/src.sock"
        ip netns exec "$hub" ssh -N -i "$work/sshd/client_key" -p "$ssh_port" -o BatchMode=yes \
            -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR \
            -L "127.0.0.1:10810:$work/src.sock" "root@$ssh_host" &
        local sshc=$!; pids+=("$sshc")
        for _ in $(seq 200); do in_hub bash -c "echo >/dev/tcp/127.0.0.1/10810" 2>/dev/null && break; sleep 0.05; done
        sync
        s0=$(cpu_of "$sshd_pid")
        t0=$(now)
        qemu-img create -q -f qcow2 "$work/out.qcow2" "$bytes"
        h=$( { time in_hub nbdcopy --destination-is-zero --flush -- "nbd://127.0.0.1:10810/src" \
            [ qemu-nbd -f qcow2 --cache=none --aio=threads "$work/out.qcow2" ] 2>"$work/err" ; } 2>&1 | awk '{print $1 + $2}')
        t1=$(now)
        local hc nc
        hc=$(echo "$h + $(cpu_of "$sshc")" | bc -l)
        nc=$(cpu_of "$qnbd")
        kill "$sshc" "$qnbd"; wait "$sshc" "$qnbd" 2>/dev/null || true
        # The session's sshd processes count once they ended (reaped by the listener).
        sleep 0.5
        nc=$(echo "$nc + $(cpu_of "$sshd_pid") - $s0" | bc -l)
        forget "$sshc" "$qnbd"
        echo "$(echo "$t1 - $t0" | bc -l) $hc $nc" >>"$work/m_sshl"

        # nbdcopy over plain TCP to the node's qemu-nbd on its address (inside the rig only).
        rm -f "$work/out.qcow2"
        ip netns exec "$node" qemu-nbd -r -x src -b "$node_addr" -p 10809 --shared=8 --persistent --image-opts "$opts" >/dev/null 2>&1 &
        qnbd=$!; pids+=("$qnbd")
        for _ in $(seq 200); do in_node bash -c "echo >/dev/tcp/$node_addr/10809" 2>/dev/null && break; sleep 0.05; done
        sync
        t0=$(now)
        qemu-img create -q -f qcow2 "$work/out.qcow2" "$bytes"
        h=$( { time in_hub nbdcopy --destination-is-zero --flush -- "nbd://$nbd_host:$nbd_port/src" \
            [ qemu-nbd -f qcow2 --cache=none --aio=threads "$work/out.qcow2" ] 2>"$work/err" ; } 2>&1 | awk '{print $1 + $2}')
        t1=$(now)
        nc=$(cpu_of "$qnbd")
        kill "$qnbd"; wait "$qnbd" 2>/dev/null || true
        forget "$qnbd"
        echo "$(echo "$t1 - $t0" | bc -l) $h $nc" >>"$work/m_tcp"
        rm -f "$work/out.qcow2"
        printf 'run %d: sendense %.2f s, nbdcopy via ssh -L %.2f s, nbdcopy via TCP %.2f s\n' "$n" \
            "$(tail -1 "$work/m_sendense" | cut -d' ' -f1)" "$(tail -1 "$work/m_sshl" | cut -d' ' -f1)" \
            "$(tail -1 "$work/m_tcp" | cut -d' ' -f1)"
    done
    local rate
    for m in sendense sshl tcp; do
        local t hub_cpu node_cpu
        t=$(cut -d' ' -f1 "$work/m_$m" | median)
        hub_cpu=$(cut -d' ' -f2 "$work/m_$m" | median)
        node_cpu=$(cut -d' ' -f3 "$work/m_$m" | median)
        rate=$(echo "$mib / $t" | bc -l)
        eval "rate_$m=$rate"
        printf '  %-22s median %6.2f s  %7.1f MiB/s  CPU per GiB: hub %.2f s, node %.2f s\n' \
            "$(case $m in sendense) echo "sendense backup";; sshl) echo "nbdcopy via ssh -L";; tcp) echo "nbdcopy via plain TCP";; esac)" \
            "$t" "$rate" "$(echo "$hub_cpu / $gib" | bc -l)" "$(echo "$node_cpu / $gib" | bc -l)"
    done
    # shellcheck disable=SC2154
    printf '  sendense / ssh -L = %.2f×, sendense / plain TCP = %.0f %%\n' \
        "$(echo "$rate_sendense / $rate_sshl" | bc -l)" "$(echo "$rate_sendense * 100 / $rate_tcp" | bc -l)"
}

configuration "$rtt"
[ "${NO_DELAY:-1}" = 0 ] || configuration 0
