#!/usr/bin/env bash
# stop.sh DIR [--keep]
#
# Stop the daemons started by start.sh DIR: exactly the pids named in
# DIR/run/*.pid (radosgw first, then osd, then mon), wait for them to exit
# (SIGTERM, then SIGKILL after 15 s), then remove DIR (and the bluestore block
# directory if it was put elsewhere) unless --keep is given.
set -uo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [--keep]" >&2
    exit 2
fi
DIR=$1
KEEP=${2:-}
[[ -d $DIR ]] || exit 0
DIR=$(cd "$DIR" && pwd)

# Only kill a pid if it is still a ceph daemon whose command line mentions our
# conf, so a stale pid file cannot make us kill an unrelated, reused pid.
ours() {
    local pid=$1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$DIR/ceph.conf"
}

# Stop one daemon at a time, radosgw first and the monitor last: an OSD
# told to stop reports to the monitor first and waits up to 5 s for it.
stop_pid() { # stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        ours "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 50); do
        ours "$pid" || return 0
        sleep 0.1
    done
    echo "rgw-stop: pid $pid did not exit" >&2
    return 1
}

rc=0
for name in client.rgw.a osd.0 mon.a; do
    f=$DIR/run/$name.pid
    [[ -f $f ]] || continue
    pid=$(tr -dc '0-9' <"$f")
    [[ -n $pid ]] || continue
    if ours "$pid"; then
        stop_pid "$pid" || rc=1
    fi
done
[[ $rc == 0 ]] || exit 1

if [[ $KEEP != --keep ]]; then
    block=$(sed -n 's/^bluestore block path = \(.*\)\/osd\.0\.block$/\1/p' "$DIR/ceph.conf" 2>/dev/null)
    if [[ -n $block && $block != "$DIR"/* && -d $block ]]; then
        rm -f "$block/osd.0.block"
        rmdir "$block" 2>/dev/null
    fi
    rm -rf "$DIR"
fi
exit 0
