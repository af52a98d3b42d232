#!/usr/bin/env bash
# Runs taskq's benchmark suite (bench/run.php) with the freshly built
# extension, and makes sure nothing it started outlives it: every process
# the suite starts carries TASKQ_BENCH_TAG in its environment, and the trap
# kills each live process with that tag (by pid) on exit, error or Ctrl-C.
#
#   bench/run.sh                       # what `make bench` runs
#   BENCH_SCALE=0.1 BENCH_REPS=3 bench/run.sh
#   BENCH_ONLY=3,4 bench/run.sh
#   bench/run.sh profile               # perf profile of the pipelined scenario
set -uo pipefail

cd "$(dirname "$0")/.."
export TASKQ_BENCH_TAG="bench$$$(date +%s%N | tail -c 6)"
SO="${TASKQ_EXT:-$PWD/modules/taskq.so}"
[ -f "$SO" ] || { echo "bench: $SO not found; run 'make build' first" >&2; exit 1; }
# Every process of the run loads one private copy, so a rebuild of
# modules/taskq.so during the run cannot mix two builds in one table.
mkdir -p "/tmp/taskq-bench-$TASKQ_BENCH_TAG"
cp "$SO" "/tmp/taskq-bench-$TASKQ_BENCH_TAG/taskq.so"
export TASKQ_EXT_ORIGIN="$SO"
SO="/tmp/taskq-bench-$TASKQ_BENCH_TAG/taskq.so"
export TASKQ_EXT="$SO"
# Like the Makefile's $(PHP): PHP's own ini files minus an installed taskq.ini.
if [ -d "$PWD/target/php-conf.d" ]; then export PHP_INI_SCAN_DIR="$PWD/target/php-conf.d"; fi

kill_tagged() {
    local pass pid found
    for pass in 1 2 3 4 5 6 7 8 9 10; do
        found=""
        for pid in $(grep -lsa "TASKQ_BENCH_TAG=$TASKQ_BENCH_TAG" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
            [ "$pid" = "$$" ] && continue
            kill -KILL "$pid" 2>/dev/null && found=1
        done
        [ -z "$found" ] && return 0
        sleep 0.1
    done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    kill_tagged
    rm -rf "/tmp/taskq-bench-$TASKQ_BENCH_TAG" /var/tmp/taskq-bench-store-"$TASKQ_BENCH_TAG"-* 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2
MAIN=bench/run.php
if [ "${1:-}" = profile ]; then MAIN=bench/profile.php; shift; fi
# Not exec: the trap must run after PHP exits.
php -d "extension=$SO" -d memory_limit=-1 "$MAIN" "$@"
