#!/usr/bin/env bash
# Runs the workspace tests (doc tests, then every target) and ends with one summary line,
# "N passed, N failed, N skipped", summed over every test binary.
#
# One S3 server (Ceph RGW on 127.0.0.1, tests/support/rgw/) serves every test of the run: it is
# started here and named in SENDENSE_TEST_RGW (a test run without it starts its own).
set -uo pipefail
log=$(mktemp)
rgw=""
stop_rgw() {
    if [ -n "$rgw" ]; then bash tests/support/rgw/stop.sh "$rgw/data" >/dev/null 2>&1; rm -rf "$rgw"; fi
}
trap 'stop_rgw; rm -f "$log"' EXIT
if command -v radosgw >/dev/null 2>&1 && [ -z "${SENDENSE_TEST_RGW:-}" ]; then
    rgw=$(mktemp -d /tmp/sendense-rgw-run.XXXXXX)
    port=""
    for p in $(seq 27480 2 27580); do
        if ! ss -Hltn "sport = :$p" | grep -q . && ! ss -Hltn "sport = :$((p + 1))" | grep -q .; then
            port=$p
            break
        fi
    done
    if [ -n "$port" ] && RGW_ACCESS_KEY=sendense-test-access RGW_SECRET_KEY=sendense-test-secret \
        bash tests/support/rgw/start.sh "$rgw/data" "$port" "$((port + 1))"; then
        export SENDENSE_TEST_RGW="http://127.0.0.1:$port"
    else
        echo "the shared RGW did not start; each S3 test binary starts its own" >&2
    fi
fi
status=0
cargo test --workspace --doc 2>&1 | tee -a "$log" || status=1
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee -a "$log" || status=1
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit $status
