#!/usr/bin/env bash
# Benchmark: an S3 repository on a throw-away Ceph RGW (bluestore on a sparse block file in the
# work dir, tests/support/rgw/start.sh; a fresh one per run), against boto3 doing the same
# transfers in the same run:
#   1. upload: `sendense backup copy` of a full + 10 % incremental chain (a DISK_SIZE disk with
#      40 % random data) into a fresh bucket (both images, their packed digest files, the
#      manifests; each image checked against its digests before it goes), against boto3
#      `upload_file` of the same four files (two images, two digest files) into another fresh
#      bucket, with Sendense's part size and parallelism (16 MiB parts, 4 at a time);
#   2. restore: `sendense restore` of the top of the chain from the bucket (ranged reads) to a
#      qcow2 file, verified and --no-verify, each followed by a sync of the output, against boto3
#      `download_file` of both images, then `qemu-img convert -O qcow2` of the downloaded top
#      and a sync of its output.
# The boto3 side is timed from its client's creation (after Python has started and imported
# boto3); Sendense's from the start of its process. Every restore is compared with the chain.
# Medians of RUNS; the order of the tools rotates per run and each step starts after a `sync`.
# MiB/s over the bytes of the four files (upload) and over the disk's allocated data (restore).
# Peak memory from /usr/bin/time.
#   bench/s3.sh [DISK_SIZE] [RUNS]      defaults: 4G 3
# Needs radosgw ceph-mon ceph-osd ceph-common (see tests/support/rgw/start.sh) and python3-boto3.
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/../scripts/vm.sh"
size=${1:-4G}
runs=${2:-3}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
rgw_dir="$(cd "$(dirname "$0")/../tests/support/rgw" && pwd)"
python3 -c 'import boto3' 2>/dev/null \
    || { echo "bench/s3.sh needs boto3: apt-get install python3-boto3" >&2; exit 2; }
work=$(mktemp -d /tmp/sendense-bench-s3.XXXXXX)
pids=()
rgw=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -z "$rgw" ] || "$rgw_dir/stop.sh" "$rgw" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
bytes=$(numfmt --from=iec "$size")
now() { date +%s.%N; }
seconds() { echo "$2 - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mibs() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.1f", n / 1048576 / s}'; }

# A fresh RGW for each run, on two free ports of 127.0.0.1 (S3 and its monitor): bluestore keeps
# the space of deleted objects in its block file, so one store for every run would need the
# space of all of them.
start_rgw() {
    local port mon_port
    read -r port mon_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
    rgw="$work/rgw$run"
    RGW_OBJECTSTORE=bluestore RGW_STORE_BYTES=$((24 * 1024 ** 3)) RGW_BLOCK_DIR="$work/rgw$run-block" \
        RGW_TIMEOUT=${RGW_TIMEOUT:-180} "$rgw_dir/start.sh" "$rgw" "$port" "$mon_port"
    endpoint="http://127.0.0.1:$port"
}
stop_rgw() { "$rgw_dir/stop.sh" "$rgw" >/dev/null 2>&1 || true; rgw=""; }
creds="$work/s3.cred"
(umask 077; printf '[default]\naws_access_key_id = sendense-test-access\naws_secret_access_key = sendense-test-secret\n' >"$creds")

# The boto3 side: mkbucket BUCKET | upload BUCKET FILE... | download BUCKET DIR KEY...; upload and
# download print their seconds.
cat >"$work/boto3-bench.py" <<'EOF'
import os
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

MIB = 1 << 20
t0 = time.monotonic()
extra = {}
if "request_checksum_calculation" in Config.OPTION_DEFAULTS:  # botocore >= 1.36
    extra = dict(request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="sendense-test-access",
                  aws_secret_access_key="sendense-test-secret",
                  config=Config(s3={"addressing_style": "path"}, max_pool_connections=6, **extra))
tc = TransferConfig(multipart_threshold=16 * MIB, multipart_chunksize=16 * MIB, max_concurrency=4)
cmd, bucket, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
if cmd == "mkbucket":
    s3.create_bucket(Bucket=bucket)
elif cmd == "upload":
    for f in rest:
        s3.upload_file(f, bucket, os.path.basename(f), Config=tc)
    print("%.3f" % (time.monotonic() - t0))
elif cmd == "download":
    for key in rest[1:]:
        s3.download_file(bucket, key, os.path.join(rest[0], key), Config=tc)
    print("%.3f" % (time.monotonic() - t0))
else:
    sys.exit("unknown command " + cmd)
EOF
boto() { S3_ENDPOINT=$endpoint python3 "$work/boto3-bench.py" "$@"; }
# The same, its peak RSS in $work/rss-py.
boto_rss() { /usr/bin/time -f %M -o "$work/rss-py" env S3_ENDPOINT="$endpoint" python3 "$work/boto3-bench.py" "$@"; }

# The disk, the hub and the chain: a full, 10 % changed, an incremental.
nbdkit -f --exit-with-parent -U "$work/gen.sock" sparse-random size="$size" percent=40 seed=7 >/dev/null 2>&1 &
pids+=($!)
wait_for "$work/gen.sock"
qemu-img convert -O qcow2 "nbd+unix:///?socket=$work/gen.sock" "$work/disk.qcow2"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'

export SENDENSE_HOME="$work/state"
"$sendense" init -q >/dev/null
"$sendense" repo add r --path "$work/repo" >/dev/null
"$sendense" vm add vm --disk "$work/disk.qcow2" >/dev/null
"$sendense" backup start vm -q
full=$("$sendense" backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
change=$((bytes / 10))
step=$((bytes / (change / 1048576)))
cmds=()
for off in $(seq 0 "$step" $((bytes - 1048576))); do cmds+=(-c "write -P 9 $off 1M"); done
qemu-io -f qcow2 "${cmds[@]}" "$work/disk.qcow2" >/dev/null
"$sendense" backup start vm -q
inc=$("$sendense" backup list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
src="$work/repo/vm/2000"
files=("$src/$full.qcow2" "$src/$full.digests" "$src/$inc.qcow2" "$src/$inc.digests")
ls "${files[@]}" >/dev/null
# Restores are compared with the chain in the repository: the disk is no longer needed.
rm -f "$work/disk.qcow2"
file_bytes=$(stat -c %s "${files[@]}" | awk '{n += $1} END {print n}')
data_bytes=$(qemu-img map --output=json "$src/$inc.qcow2" \
    | python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')

timed() { local a b; a=$(now); "$@" >/dev/null; b=$(now); seconds "$a" "$b"; }
rss() { tail -1 "$work/rss"; }
# Each step prints its seconds; sendense's peak RSS goes to $work/rss, boto3's to $work/rss-py.
copy() { /usr/bin/time -f %M -o "$work/rss" "$sendense" backup copy "$inc" --to "s$run" -q; }
up_ours() { timed copy; }
up_ref() { boto_rss upload "boto3-r$run" "${files[@]}"; }
ours_restore() {
    /usr/bin/time -f %M -o "$work/rss" "$sendense" restore "$inc" --repo "s$run" --disk 2000 \
        --to "$work/out.qcow2" -q "$@" && sync -f "$work/out.qcow2"
}
restore() {
    local secs
    rm -f "$work/out.qcow2"
    secs=$(timed ours_restore "$@")
    qemu-img compare -q "$src/$inc.qcow2" "$work/out.qcow2" || { echo "restore differs from the backup!" >&2; exit 1; }
    rm -f "$work/out.qcow2"
    echo "$secs"
}
down_ours() { restore; }
down_ours_nv() { restore --no-verify; }
# The downloaded top names its backing file relatively, so the chain opens where it lands.
convert_ref() { qemu-img convert -O qcow2 "$work/dl/$inc.qcow2" "$work/ref.qcow2" && sync -f "$work/ref.qcow2"; }
down_ref() {
    local d c
    rm -rf "$work/dl" "$work/ref.qcow2"; mkdir "$work/dl"
    d=$(boto_rss download "boto3-r$run" "$work/dl" "$full.qcow2" "$inc.qcow2")
    c=$(timed convert_ref)
    qemu-img compare -q "$src/$inc.qcow2" "$work/ref.qcow2" || { echo "reference restore differs from the backup!" >&2; exit 1; }
    rm -rf "$work/dl" "$work/ref.qcow2"
    echo "$d $c" >"$work/ref-split"
    echo "$d + $c" | bc
}

declare -A t
for k in up-ours up-ref down-ours down-ours_nv down-ref; do t[$k]=""; done
r_up="" r_down="" r_down_nv=""
peak_copy=0 peak_restore=0 peak_py_up=0 peak_py_down=0
max() { echo $(( $1 > $2 ? $1 : $2 )); }
for run in $(seq "$runs"); do
    start_rgw
    boto mkbucket "sendense-r$run"
    boto mkbucket "boto3-r$run"
    "$sendense" repo add "s$run" --s3 "$endpoint/sendense-r$run" --path-style --credentials-file "$creds" >/dev/null
    # Upload: the sources in the page cache, nothing dirty left from before; the order rotates.
    cat "${files[@]}" >/dev/null
    order=(up_ours up_ref)
    [ $((run % 2)) = 0 ] && order=(up_ref up_ours)
    for s in "${order[@]}"; do
        sync
        secs=$($s)
        case $s in
            up_ours) u=$secs; peak_copy=$(max "$(rss)" "$peak_copy") ;;
            up_ref) ur=$secs; peak_py_up=$(max "$(tail -1 "$work/rss-py")" "$peak_py_up") ;;
        esac
    done
    t[up-ours]+="$u "; t[up-ref]+="$ur "; r_up+="$(div "$u" "$ur") "
    printf 'run %d upload : sendense backup copy %.2f s, boto3 upload_file %.2f s (order: %s)\n' \
        "$run" "$u" "$ur" "${order[*]}"
    # Restore from the buckets.
    order=(down_ours down_ours_nv down_ref)
    for _ in $(seq $(( (run - 1) % 3 ))); do order=("${order[@]:1}" "${order[0]}"); done
    for s in "${order[@]}"; do
        sync
        secs=$($s)
        case $s in
            down_ours) d=$secs; peak_restore=$(max "$(rss)" "$peak_restore") ;;
            down_ours_nv) dn=$secs; peak_restore=$(max "$(rss)" "$peak_restore") ;;
            down_ref) dr=$secs; peak_py_down=$(max "$(tail -1 "$work/rss-py")" "$peak_py_down") ;;
        esac
    done
    t[down-ours]+="$d "; t[down-ours_nv]+="$dn "; t[down-ref]+="$dr "
    r_down+="$(div "$d" "$dr") "; r_down_nv+="$(div "$dn" "$dr") "
    read -r dl cv <"$work/ref-split"
    printf 'run %d restore: sendense restore %.2f s, --no-verify %.2f s, boto3 download_file + qemu-img convert %.2f s (%.2f + %.2f) (order: %s)\n' \
        "$run" "$d" "$dn" "$dr" "$dl" "$cv" "${order[*]}"
    stop_rgw
done

med() { echo "${t[$1]}" | tr ' ' '\n' | grep . | median; }
u=$(med up-ours); ur=$(med up-ref); d=$(med down-ours); dn=$(med down-ours_nv); dr=$(med down-ref)
echo
printf 'S3 (Ceph RGW, bluestore, a fresh one per run): disk %s, runs %d; upload %.1f MiB (4 files), restore %.1f MiB of allocated data\n' \
    "$size" "$runs" "$(div "$file_bytes" 1048576)" "$(div "$data_bytes" 1048576)"
printf '%-22s %9s %8s %9s %8s %7s  %s\n' step sendense MiB/s boto3 MiB/s ratio 'per-run ratios'
printf '%-22s %8.2fs %8s %8.2fs %8s %7s  %s\n' upload "$u" "$(mibs "$file_bytes" "$u")" "$ur" "$(mibs "$file_bytes" "$ur")" \
    "$(div "$u" "$ur")" "$r_up"
printf '%-22s %8.2fs %8s %8.2fs %8s %7s  %s\n' restore "$d" "$(mibs "$data_bytes" "$d")" "$dr" "$(mibs "$data_bytes" "$dr")" \
    "$(div "$d" "$dr")" "$r_down"
printf '%-22s %8.2fs %8s %8.2fs %8s %7s  %s\n' 'restore --no-verify' "$dn" "$(mibs "$data_bytes" "$dn")" "$dr" "$(mibs "$data_bytes" "$dr")" \
    "$(div "$dn" "$dr")" "$r_down_nv"
printf 'boto3 restore = download_file of both images + qemu-img convert -O qcow2 + sync; ratio = sendense / boto3\n'
printf 'peak RSS: sendense backup copy %.1f MiB, restore %.1f MiB; boto3 upload %.1f MiB, download %.1f MiB\n' \
    "$(div "$peak_copy" 1024)" "$(div "$peak_restore" 1024)" "$(div "$peak_py_up" 1024)" "$(div "$peak_py_down" 1024)"
