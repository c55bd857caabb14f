#!/bin/sh
# The whole test suite: dependencies, build, lint (clang-format, luacheck,
# a clang build), C tests (plain, ASan+UBSan, TSan), the fuzz targets over
# their corpora plus a short run, then the busted specs under LuaJIT.  Ends
# with one line "N passed, M failed, K skipped" counting tests (each C test
# function in each build, each fuzz replay and run, each busted `it`), so a
# run that executed no test shows it; the C checks are reported apart.
cd "$(dirname "$0")/.." || exit 1
sh tools/deps.sh || exit 1

log=$(mktemp "${LB_TMPDIR:-${TMPDIR:-/tmp}}/lb-test.XXXXXXXX")
trap 'rm -f "$log"' EXIT
status=0
run() {
    echo "== $*"
    { "$@" 2>&1; echo "rc=$?" > "$log.rc"; } | tee -a "$log"
    if ! grep -q '^rc=0$' "$log.rc"; then
        echo "== FAILED: $*"
        status=1
    fi
    rm -f "$log.rc"
}

run make -j2 all
[ $status = 0 ] && run make lint
[ $status = 0 ] && run make -j2 check-c
[ $status = 0 ] && run make -j2 check-asan
[ $status = 0 ] && run make -j2 check-tsan
[ $status = 0 ] && run make fuzz-check
run luajit /usr/bin/busted -o utfTerminal

# Sum the runners' counts of tests: "name: N passed, M failed (K checks,
# F failed)" per C test program (N counts test functions; each program runs
# in three builds), "fuzz_T: N passed, M failed" per fuzz target (its corpus
# replay and a short run) and busted's summary (one per `it`).  The checks
# (assertions) of the C tests are reported apart.
awk -v status=$status '
function num(re,    m) {
    if (match($0, re)) { m = substr($0, RSTART, RLENGTH); sub(/[^0-9].*/, "", m); return m + 0 }
    return 0
}
/^[A-Za-z0-9_.\/-]+: [0-9]+ passed, [0-9]+ failed/ {
    np = num("[0-9]+ passed"); nf = num("[0-9]+ failed")
    if ($1 ~ /^fuzz_/) { fp += np; ff += nf } else { cp += np; cf += nf; cprog++ }
    if (match($0, /\([0-9]+ checks, [0-9]+ failed\)/)) {
        k = substr($0, RSTART + 1); checks += k + 0
        sub(/^[0-9]+ checks, /, "", k); checks_failed += k + 0
    }
}
/^# .*skipped/ { s++ }
/[0-9]+ successes? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ {
    bp += $1; bf += $4 + $7; s += $10
}
END {
    p = cp + fp + bp; f = cf + ff + bf
    printf "C tests: %d passed, %d failed (%d program runs; %d checks, %d failed)\n", cp, cf, cprog, checks, checks_failed
    printf "fuzz: %d passed, %d failed\n", fp, ff
    printf "specs: %d passed, %d failed\n", bp, bf
    if (status != 0 && f == 0) f = 1
    printf "%d passed, %d failed, %d skipped\n", p, f, s
    exit (f > 0 || status != 0) ? 1 : 0
}' "$log"
