#!/bin/sh
# run.sh MODE SECONDS TARGET... - run libFuzzer targets (see the Makefile).
#
#   check  replay fuzz/corpus/TARGET, then fuzz for SECONDS from it; new
#          inputs go to a temporary directory that is removed afterwards
#   run    fuzz for SECONDS, keeping new inputs in build/fuzz/corpus/TARGET
#
# Prints "fuzz_TARGET: N passed, M failed (K inputs)" per target, counting
# the corpus replay and the fuzzing run as one check each; a check fails on
# a crash, a sanitizer report, a failed assertion, a timeout or an
# out-of-memory (its input is saved under build/fuzz/artifacts/TARGET/).
# Exits 1 if any target failed.
mode=$1
secs=$2
shift 2
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Executed units from a log of -print_final_stats=1 (0 when it crashed
# before printing them: the crash itself is counted apart).
units() {
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -n 1)
    echo "${n:-0}"
}

for t in "$@"; do
    bin=build/fuzz/fuzz_$t
    seeds=fuzz/corpus/$t
    art=build/fuzz/artifacts/$t
    mkdir -p "$art"
    # Heads up to LB_HTTP_MAX_HEADER (8 KiB) and beyond need longer inputs.
    # Balancer targets free snapshots after an RCU grace period, so nearly
    # every input ends with frees pending and libFuzzer's per-input leak
    # check (a full LSan scan each time) would cost 90% of the run; leaks
    # of the core are the soak's to find (LSan over a full lifecycle).
    case $t in
    http_response) extra="-max_len=16384" ;;
    update | select) extra="-max_len=4096 -detect_leaks=0" ;;
    *) extra="-max_len=4096" ;;
    esac
    opts="-print_final_stats=1 -timeout=10 -rss_limit_mb=2048 $extra -artifact_prefix=$art/"
    passed=0
    failed=0
    inputs=0

    if [ "$mode" = check ]; then
        if ! "$bin" $opts -runs=0 "$seeds" >"$tmp/$t.replay" 2>&1; then
            failed=$((failed + 1))
            tail -n 40 "$tmp/$t.replay" >&2
        else
            passed=$((passed + 1))
        fi
        inputs=$((inputs + $(units "$tmp/$t.replay")))
        out=$tmp/$t.new
    else
        out=build/fuzz/corpus/$t
    fi
    mkdir -p "$out"
    if ! "$bin" $opts -max_total_time="$secs" "$out" "$seeds" \
        >"$tmp/$t.run" 2>&1; then
        failed=$((failed + 1))
        tail -n 40 "$tmp/$t.run" >&2
    else
        passed=$((passed + 1))
    fi
    inputs=$((inputs + $(units "$tmp/$t.run")))
    [ "$failed" -gt 0 ] && status=1
    echo "fuzz_$t: $passed passed, $failed failed ($inputs inputs)"
done
exit $status
