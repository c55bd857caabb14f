# procs.sh - process helpers shared by tools/demo.sh and bench/nginx.sh
# (sourced).  They act only on the pids they are given.

# Running (a zombie is not: nobody may reap a daemon's exited master here).
alive() {
    [ -n "$1" ] && [ -r "/proc/$1/status" ] &&
        ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$1/status" 2>/dev/null
}
dead() { ! alive "$1"; }

# Wait until a condition command succeeds, up to $1 tenths of a second.
wait_until() {
    n=$1; shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

# The nginx workers of master $1.
children() {
    awk -v p="$1" '$2 == "(nginx)" && $4 == p { print $1 }' \
        /proc/[0-9]*/stat 2>/dev/null || true
}

# Stop the nginx whose prefix is $1 (by the pid in its pid file) and its
# workers; KILL what does not exit in time.
stop_nginx() {
    [ -f "$1/nginx.pid" ] || return 0
    pid=$(cat "$1/nginx.pid")
    kids=$(children "$pid")
    if alive "$pid"; then
        kill -TERM "$pid"
        wait_until 100 dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    for k in $kids; do
        wait_until 50 dead "$k" || kill -KILL "$k" 2>/dev/null || true
    done
    rm -f "$1/nginx.pid"
}
