# procs.sh - process and port helpers shared by tools/demo.sh and
# bench/nginx.sh
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

# Start the nginx whose prefix is $1 (configuration $1/nginx.conf, pid file
# $1/nginx.pid) and wait for its pid file.  The prefix goes into $PREFIXES
# first, so a cleanup that stops every prefix there also stops an nginx
# whose start failed half way.
start_nginx() {
    PREFIXES="$PREFIXES $1"
    mkdir -p "$1/logs"
    timeout -k 2 10 nginx -p "$1" -c "$1/nginx.conf" &&
        wait_until 50 test -s "$1/nginx.pid"
}

# $1 loopback ports that were free a moment ago, on one line, all
# different: from [LB_PORT_BASE, LB_PORT_BASE + LB_PORT_COUNT) when
# LB_PORT_BASE is set, else chosen by the kernel (spec/support/ports.lua).
# Ask once for every port a script needs: two calls may return the same.
free_ports() {
    N=$1 luajit -e '
package.path = "spec/?.lua;" .. package.path
local ports = require("support.ports")
local out = {}
for i = 1, tonumber(os.getenv("N")) do out[i] = assert(ports.free()) end
print(table.concat(out, " "))'
}

# Where temporary directories go: LB_TMPDIR, else TMPDIR, else /tmp.
lb_tmpdir() {
    t=${LB_TMPDIR:-${TMPDIR:-/tmp}}
    [ "$t" = / ] || t=${t%/}
    printf '%s\n' "$t"
}
