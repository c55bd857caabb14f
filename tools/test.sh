#!/bin/sh
# The whole test suite: dependencies, build, lint (clang-format, luacheck,
# a clang build), C tests (plain, ASan+UBSan, TSan), the fuzz targets over
# their corpora plus a short run, then the busted specs under LuaJIT.  Ends with one line
# "N passed, M failed" summing every runner's counts, so a run that
# executed no test shows it.
cd "$(dirname "$0")/.." || exit 1
sh tools/deps.sh || exit 1

log=$(mktemp)
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

# Sum "N passed, M failed" lines (C tests) and busted's summary.
awk -v status=$status '
/^[A-Za-z0-9_.\/-]*:? ?[0-9]+ passed, [0-9]+ failed/ {
    for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i
        if ($(i+1) ~ /^failed/) f += $i
    }
}
/^# .*skipped/ { s++ }
/[0-9]+ successes? \/ [0-9]+ failures? \/ [0-9]+ errors? \/ [0-9]+ pending/ {
    p += $1; f += $4 + $7; s += $10
}
END {
    if (status != 0 && f == 0) f = 1
    printf "%d passed, %d failed, %d skipped\n", p, f, s
    exit (f > 0 || status != 0) ? 1 : 0
}' "$log"
