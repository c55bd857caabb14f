#!/bin/sh
# bench/run.sh - build and run every benchmark, print one table (make bench).
#
# Each benchmark prints "ROW <bench> <case> <value> <unit> [note]" lines;
# this script runs them one after the other (never in parallel: they would
# time each other), each under a time limit, and prints them as one table.
# Environment: BENCH_RUNS (runs per figure, median reported), BENCH_CALLS
# (calls per select run), BENCH_TIMEOUT (seconds per benchmark, default
# 150).  What each figure means: bench/README.md.
cd "$(dirname "$0")/.." || exit 1

LUAJIT=${LUAJIT:-luajit}
limit=${BENCH_TIMEOUT:-150}
rows=$(mktemp "${LB_TMPDIR:-${TMPDIR:-/tmp}}/lb-bench.XXXXXXXX")
trap 'rm -f "$rows"' EXIT INT TERM

make -s bench-build >/dev/null || { echo "bench: build failed" >&2; exit 1; }

status=0
bench() {
    echo "== $*" >&2
    timeout "$limit" "$@" > "$rows.one" 2>&1
    rc=$?
    grep '^ROW ' "$rows.one" >> "$rows"
    if [ $rc != 0 ]; then
        echo "bench: '$*' failed (exit $rc)" >&2
        grep -v '^ROW ' "$rows.one" | tail -20 >&2
        status=1
    fi
    rm -f "$rows.one"
}

bench build/bench/rcu_memb
bench build/bench/rcu_bp
bench build/bench/build
bench build/bench/select_c
# checker CPU at 2,000 probes/s: 2,000 balancers, then 16,000
bench build/bench/checker_scale
bench "$LUAJIT" bench/select.lua
# 10,000 loopback backends checked at once: one descriptor each in flight
bench sh -c "ulimit -n \$(ulimit -Hn) 2>/dev/null; exec $LUAJIT bench/checks_scale.lua"
# a scrape of 1,000 backends; select with the selection count
bench "$LUAJIT" bench/metrics.lua

echo
echo "lb benchmarks: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
     "$(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
awk '
{
    note = ""
    for (i = 6; i <= NF; i++) note = note (i > 6 ? " " : "") $i
    printf "%-13s %-32s %12s %-3s %s\n", $2, $3, $4, $5, note
}' "$rows" | awk 'BEGIN { printf "%-13s %-32s %12s %-3s %s\n", "benchmark", "case", "value", "", "note";
                         print "-------------------------------------------------------------------------------" }
                 { if (prev != "" && $1 != prev) print ""; prev = $1; print }'
exit $status
