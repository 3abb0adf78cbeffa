#!/usr/bin/env bash
# start.sh DIR PORT [MON_PORT]
#
# Start a throw-away single-node Ceph cluster (1 mon, 1 osd, 1 radosgw) whose
# every file (config, mon/osd data, logs, pid files, admin sockets) lives
# under DIR, with radosgw's S3 API on http://127.0.0.1:PORT.  No systemd, no
# cephx, nothing bound outside 127.0.0.1.  Stop with stop.sh DIR.
#
# Needs Debian 12 packages: radosgw ceph-mon ceph-osd ceph-common
#   (apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common)
#
# Environment (all optional):
#   RGW_ACCESS_KEY      S3 access key of the user created   (default: sendense-test-access)
#   RGW_SECRET_KEY      S3 secret key of the user created   (default: sendense-test-secret)
#   RGW_UID             radosgw user id                     (default: sendense)
#   RGW_OBJECTSTORE     memstore (default) | bluestore
#   RGW_STORE_BYTES     memstore capacity / bluestore block file size
#                       (default 2 GiB for memstore, 8 GiB sparse for bluestore)
#   RGW_BLOCK_DIR       where the bluestore block file goes (default DIR/block;
#                       must not be inside the OSD data directory)
#   RGW_TIMEOUT         seconds to wait for readiness       (default 90)
#   RGW_KEEP_ON_FAIL    if set, leave the daemons running on failure (debugging)
#
# On success prints "RGW ready: http://127.0.0.1:PORT (...)" and exits 0.  On
# failure prints the tail of the logs, stops what it started, exits non-zero.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 DIR PORT [MON_PORT]" >&2
    exit 2
fi

DIR=$1
PORT=$2
MON_PORT=${3:-$((PORT + 1))}
ACCESS_KEY=${RGW_ACCESS_KEY:-sendense-test-access}
SECRET_KEY=${RGW_SECRET_KEY:-sendense-test-secret}
RGW_UID=${RGW_UID:-sendense}
OBJECTSTORE=${RGW_OBJECTSTORE:-memstore}
TIMEOUT=${RGW_TIMEOUT:-90}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

case "$OBJECTSTORE" in
    memstore) STORE_BYTES=${RGW_STORE_BYTES:-$((2 * 1024 * 1024 * 1024))} ;;
    bluestore) STORE_BYTES=${RGW_STORE_BYTES:-$((8 * 1024 * 1024 * 1024))} ;;
    *) echo "RGW_OBJECTSTORE must be memstore or bluestore" >&2; exit 2 ;;
esac

for bin in ceph ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool curl uuidgen; do
    command -v "$bin" >/dev/null || { echo "rgw-start: $bin not found (apt-get install radosgw ceph-mon ceph-osd ceph-common)" >&2; exit 2; }
done

for p in "$PORT" "$MON_PORT"; do
    if ss -Hltn "sport = :$p" | grep -q .; then
        echo "rgw-start: port $p is already in use" >&2
        exit 2
    fi
done

if [[ -e "$DIR" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
    echo "rgw-start: $DIR exists and is not empty" >&2
    exit 2
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BLOCK_DIR=${RGW_BLOCK_DIR:-$DIR/block}
mkdir -p "$DIR"/{run,log,mon,osd,rgw,crash,tmp}

CONF=$DIR/ceph.conf
export CEPH_CONF=$CONF
FSID=$(uuidgen)
OSD_UUID=$(uuidgen)
START=$(date +%s.%N)

# Every ceph client call goes through this: bounded, quiet, our conf only.
cephq() { timeout 20 ceph --conf "$CONF" --connect-timeout 10 "$@"; }

fail() {
    echo "rgw-start: $*" >&2
    for f in "$DIR"/log/*.log; do
        [[ -f $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2
    done
    if [[ -z ${RGW_KEEP_ON_FAIL:-} ]]; then
        "$HERE/stop.sh" "$DIR" --keep >/dev/null 2>&1 || true
    fi
    exit 1
}

deadline=$(( $(date +%s) + TIMEOUT ))
wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1; shift
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || fail "timed out (${TIMEOUT}s) waiting for $what"
        sleep 0.5
    done
}

if [[ $OBJECTSTORE == bluestore ]]; then
    STORE_CONF="osd objectstore = bluestore
bluestore block path = $BLOCK_DIR/osd.0.block
bluestore block create = true
bluestore block size = $STORE_BYTES
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 268435456
osd memory target = 939524096"
    mkdir -p "$BLOCK_DIR"
else
    STORE_CONF="osd objectstore = memstore
memstore device bytes = $STORE_BYTES
memstore page set = true"
fi

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true

auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms mon client mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc

run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = true
log to syslog = false
mon cluster log file = $DIR/log/cluster.log
mon cluster log to syslog = false
crash dir = $DIR/crash
tmp dir = $DIR/tmp
keyring = $DIR/keyring
debug ms = 0
debug monc = 0

osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false

[mon]
mon data = $DIR/mon/\$name
# radosgw creates its pools one by one at start-up, and every pool change
# waits for a paxos proposal (1 s by default): 0.05 s saves ~8 s of start-up.
paxos propose interval = 0.05
mon data avail warn = 1
mon data avail crit = 0

[osd]
osd data = $DIR/osd/\$name
$STORE_CONF
osd max object size = 134217728
osd op num shards = 2
osd op num threads per shard = 1

[client]
ms mon client mode = crc
auth client required = none
rgw data = $DIR/rgw/\$name
log file = $DIR/log/\$name.log
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw thread pool size = 64
rgw enable usage log = false
rgw crypt require ssl = false
# Deleted/overwritten object data is garbage-collected after 2 h by default,
# which keeps it in memstore's RAM; collect after 60 s instead.
rgw gc obj min wait = 60
rgw gc processor period = 30
# Once the OSD is full (95% of memstore device bytes / the block file), RADOS
# blocks writes and deletes indefinitely; time them out instead so the S3 call
# fails rather than hangs.
rados osd op timeout = 30
rados mon op timeout = 30
EOF
printf '%s\n' "$PORT" >"$DIR/rgw.port"

# ---- monitor ---------------------------------------------------------------
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/tmp/monmap" \
    >"$DIR/log/setup.log" 2>&1 || fail "monmaptool failed"
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' \
    >>"$DIR/log/setup.log" 2>&1 || fail "ceph-authtool failed"
ceph-mon --conf "$CONF" --mkfs -i a --monmap "$DIR/tmp/monmap" --keyring "$DIR/keyring" \
    >>"$DIR/log/setup.log" 2>&1 || fail "ceph-mon --mkfs failed"
ceph-mon --conf "$CONF" -i a >>"$DIR/log/setup.log" 2>&1 || fail "ceph-mon failed to start"
wait_for "monitor" cephq mon stat
phase() { printf '%s +%ss\n' "$1" "$(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" >>"$DIR/log/setup.log"; }
phase "mon up"

# ---- osd -------------------------------------------------------------------
OSD_ID=$(cephq osd new "$OSD_UUID" 2>>"$DIR/log/setup.log") || fail "ceph osd new failed"
[[ $OSD_ID == 0 ]] || fail "unexpected osd id '$OSD_ID'"
mkdir -p "$DIR/osd/osd.0"
ceph-osd --conf "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" \
    >>"$DIR/log/setup.log" 2>&1 || fail "ceph-osd --mkfs failed"
ceph-osd --conf "$CONF" -i 0 >>"$DIR/log/setup.log" 2>&1 || fail "ceph-osd failed to start"
osd_up() { cephq osd dump --format json 2>/dev/null | grep -q '"up":1'; }
wait_for "osd.0 up" osd_up
phase "osd up"

# ---- radosgw ---------------------------------------------------------------
radosgw --conf "$CONF" -n client.rgw.a >>"$DIR/log/setup.log" 2>&1 || fail "radosgw failed to start"
rgw_http() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$PORT/"; }
wait_for "radosgw HTTP on 127.0.0.1:$PORT" rgw_http
phase "rgw http"

# radosgw-admin prints the user's keys as JSON: keep that out of any output.
timeout 60 radosgw-admin --conf "$CONF" -n client.admin user create \
    --uid "$RGW_UID" --display-name "$RGW_UID" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >/dev/null 2>>"$DIR/log/setup.log" \
    || fail "radosgw-admin user create failed"

# A signed ListBuckets must return 200 before the user counts as working.
# (curl 7.88's --aws-sigv4 does not add x-amz-content-sha256, which RGW
# requires for SigV4: without it RGW answers 403 SignatureDoesNotMatch.)
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
user_ok() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' -m 5 -H "x-amz-content-sha256: $EMPTY_SHA256" \
        --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" "http://127.0.0.1:$PORT/") == 200 ]]
}
wait_for "S3 user to authenticate" user_ok
phase "user ok"

END=$(date +%s.%N)
printf 'RGW ready: http://127.0.0.1:%s (mon 127.0.0.1:%s, %s, %.1fs)\n' \
    "$PORT" "$MON_PORT" "$OBJECTSTORE" "$(awk -v a="$START" -v b="$END" 'BEGIN{print b-a}')"
