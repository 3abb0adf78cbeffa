#!/usr/bin/env bash
# Benchmark: `sendense backup copy` into a second repository, against copying the same files
# with the reference tools in the same run, each followed by a sync of what it wrote:
#   1. the full of a DISK_SIZE disk (40 % random data): `cp --sparse=always` of its image and
#      digest file, and `qemu-img convert -O qcow2` of its image;
#   2. a 10 % incremental on top of it (the full is there already): the same for its files.
# Sendense also checks every block it wrote against the recorded digests before it commits;
# the reference copies check nothing. Peak memory of `backup copy` from /usr/bin/time.
#   bench/repo-copy.sh [DISK_SIZE] [RUNS]      defaults: 4G 3
set -euo pipefail
. "$(dirname "$0")/../scripts/vm.sh"
size=${1:-4G}
runs=${2:-3}
bin=${BIN:-target/release}
sendense="$(cd "$bin" && pwd)/sendense"
work=$(mktemp -d /tmp/sendense-bench-repo-copy.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
bytes=$(numfmt --from=iec "$size")
now() { date +%s.%N; }
seconds() { echo "$2 - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

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

timed() { local a b; a=$(now); "$@" >/dev/null; b=$(now); seconds "$a" "$b"; }
ref_cp() { mkdir -p "$work/cp"; cp --sparse=always "$src/$1.qcow2" "$src/$1.digests" "$work/cp/" && sync -f "$work/cp/$1.qcow2"; }
# The image alone (its own clusters, without its backing chain), as a copy of a link moves it.
ref_convert() { mkdir -p "$work/cv"; qemu-img convert -O qcow2 \
    "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$src/$1.qcow2\"}}" \
    "$work/cv/$1.qcow2" && sync -f "$work/cv/$1.qcow2"; }

declare -A t
for what in full incremental; do
    for tool in sendense cp convert; do t[$what-$tool]=""; done
done
peak=0
ours() { /usr/bin/time -f '%M' -o "$work/rss" "$sendense" backup copy "$1" --to "c$run" -q; }
for run in $(seq "$runs"); do
    "$sendense" repo add "c$run" --path "$work/c$run" >/dev/null
    for what in full incremental; do
        id=$full; [ "$what" = incremental ] && id=$inc
        rm -rf "$work/cp" "$work/cv"
        # The sources in the page cache, nothing dirty left from before; the order rotates.
        cat "$src"/* >/dev/null
        order=(ours ref_cp ref_convert)
        for _ in $(seq $(( (run - 1) % 3 ))); do order=("${order[@]:1}" "${order[0]}"); done
        for step in "${order[@]}"; do
            sync
            secs=$(timed "$step" "$id")
            case $step in
                ours) s=$secs ;;
                ref_cp) c=$secs ;;
                ref_convert) v=$secs ;;
            esac
        done
        peak=$(( $(tail -1 "$work/rss") > peak ? $(tail -1 "$work/rss") : peak ))
        t[$what-sendense]+="$s "; t[$what-cp]+="$c "; t[$what-convert]+="$v "
        printf 'run %d %-11s: sendense backup copy %.2f s, cp --sparse + sync %.2f s, qemu-img convert + sync %.2f s (order: %s)\n' \
            "$run" "$what" "$s" "$c" "$v" "${order[*]}"
    done
    "$sendense" backup verify "$inc" --repo "c$run" -q >/dev/null && echo "run $run: verify of the copies: ok"
done
for what in full incremental; do
    s=$(echo "${t[$what-sendense]}" | tr ' ' '\n' | grep . | median)
    c=$(echo "${t[$what-cp]}" | tr ' ' '\n' | grep . | median)
    v=$(echo "${t[$what-convert]}" | tr ' ' '\n' | grep . | median)
    printf 'median %-11s: sendense %.2f s, cp %.2f s (ratio %.2f), qemu-img convert %.2f s (ratio %.2f)\n' \
        "$what" "$s" "$c" "$(echo "$s / $c" | bc -l)" "$v" "$(echo "$s / $v" | bc -l)"
done
printf 'image sizes: full %s, incremental %s; peak RSS of backup copy: %d KiB\n' \
    "$(du -h --apparent-size "$src/$full.qcow2" | cut -f1)" "$(du -h --apparent-size "$src/$inc.qcow2" | cut -f1)" "$peak"
