#!/usr/bin/env bash
# Runs the workspace tests (doc tests, then every target) and ends with one summary line,
# "N passed, N failed, N skipped", summed over every test binary.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --doc 2>&1 | tee -a "$log" || status=1
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee -a "$log" || status=1
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit $status
