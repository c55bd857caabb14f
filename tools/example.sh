#!/bin/sh
# tools/example.sh NAME start|stop|reload - run one of examples/ (make
# example NAME=static).  NAME: static, discovery, passive (nginx
# configurations) or plain (examples/plain.lua under luajit; start only).
#
# The configuration is rendered into a private directory,
#   ${LB_TMPDIR:-${TMPDIR:-/tmp}}/lb-example.NAME.PORT
# (PORT: the example's first port), which replaces the file's
# /tmp/lb-example, then nginx runs with the repository as its prefix.
# Ports: with LB_PORT_BASE set, the example's four ports (static: 8080-8083,
# discovery and passive: 8090-8093) become LB_PORT_BASE .. LB_PORT_BASE + 3;
# without it, the file's own.  They are probed free before nginx starts.
# The discovery example reads, and rereads every 2 s, the backends.txt of
# that directory (a copy of examples/backends.txt with the same ports);
# LB_BACKENDS_FILE, when set, names another file.  `stop` stops that nginx
# and removes the directory; `reload` renders again and reloads.  Every
# server listens on 127.0.0.1 only.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. tools/procs.sh

usage() {
    echo "usage: tools/example.sh static|discovery|passive start|stop|reload" >&2
    echo "       tools/example.sh plain start" >&2
    exit 2
}
[ $# -eq 2 ] || usage
NAME=$1 ACTION=$2

case $NAME in
static) FIRST=8080 ;;
discovery | passive) FIRST=8090 ;;
plain)
    [ "$ACTION" = start ] || usage
    [ -f build/lb/core.so ] || make
    exec luajit examples/plain.lua
    ;;
*) usage ;;
esac
case $ACTION in start | stop | reload) ;; *) usage ;; esac

# The ports, validated as spec/support/ports.lua does.
BASE=$(luajit -e '
package.path = "spec/?.lua;" .. package.path
local ok, base = pcall(require("support.ports").range)
if not ok then io.stderr:write("tools/example.sh: ", base, "\n"); os.exit(2) end
print(base or "")') || exit 2
if [ -n "$BASE" ]; then
    count=${LB_PORT_COUNT:-1000}
    if [ "$count" -lt 4 ]; then
        echo "tools/example.sh: the example needs 4 ports, LB_PORT_COUNT is $count" >&2
        exit 2
    fi
else
    BASE=$FIRST
fi
P0=$BASE P1=$((BASE + 1)) P2=$((BASE + 2)) P3=$((BASE + 3))

DIR=$(lb_tmpdir)/lb-example.$NAME.$P0
CONF=$DIR/$NAME.nginx.conf
PIDFILE=$DIR/$NAME.pid

# examples/<file> with the ports moved and /tmp/lb-example replaced.
render() {
    # through markers, so that a new port equal to another old one (a base
    # of 8091) is not moved twice
    sed -e "s|/tmp/lb-example|$DIR|g" \
        -e "s|127\.0\.0\.1:$FIRST\([^0-9]\)|127.0.0.1:@P0@\1|g; s|127\.0\.0\.1:$FIRST\$|127.0.0.1:@P0@|" \
        -e "s|127\.0\.0\.1:$((FIRST + 1))\([^0-9]\)|127.0.0.1:@P1@\1|g; s|127\.0\.0\.1:$((FIRST + 1))\$|127.0.0.1:@P1@|" \
        -e "s|127\.0\.0\.1:$((FIRST + 2))\([^0-9]\)|127.0.0.1:@P2@\1|g; s|127\.0\.0\.1:$((FIRST + 2))\$|127.0.0.1:@P2@|" \
        -e "s|127\.0\.0\.1:$((FIRST + 3))\([^0-9]\)|127.0.0.1:@P3@\1|g; s|127\.0\.0\.1:$((FIRST + 3))\$|127.0.0.1:@P3@|" \
        -e "s|@P0@|$P0|g; s|@P1@|$P1|g; s|@P2@|$P2|g; s|@P3@|$P3|g" \
        "examples/$1"
}

running() { [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; }

urls() {
    echo "$NAME example: nginx -p $ROOT/ -c $CONF"
    echo "dir: $DIR (logs: $DIR/$NAME.error.log)"
    case $NAME in
    static)
        echo "front:       http://127.0.0.1:$P0/   (backends 127.0.0.1:$P1..$P3, weights 1:2:3)"
        echo "status JSON: http://127.0.0.1:$P0/lb-status"
        echo "metrics:     http://127.0.0.1:$P0/metrics"
        echo "status page: http://127.0.0.1:$P0/status"
        ;;
    discovery)
        echo "front:       curl -s -H 'X-User: alice' http://127.0.0.1:$P0/"
        echo "status JSON: http://127.0.0.1:$P0/lb-status"
        echo "backends:    edit ${LB_BACKENDS_FILE:-$DIR/backends.txt} (add, remove, mark \"down\"): applied within 2 s"
        ;;
    passive)
        echo "front:       http://127.0.0.1:$P0/   (127.0.0.1:$P3 answers 500; clients never see it)"
        echo "status JSON: http://127.0.0.1:$P0/lb-status"
        ;;
    esac
    echo "stop:        sh tools/example.sh $NAME stop"
}

case $ACTION in
start)
    [ -f build/lb/core.so ] || make
    if running; then
        echo "tools/example.sh: $NAME already runs (pid $(cat "$PIDFILE"))" >&2
        urls
        exit 0
    fi
    PORTS="$P0 $P1 $P2 $P3" luajit -e '
package.path = "spec/?.lua;" .. package.path
local ports = require("support.ports")
for p in os.getenv("PORTS"):gmatch("%d+") do
  if not ports.probe("127.0.0.1", tonumber(p)) then
    io.stderr:write("tools/example.sh: port ", p, " is in use (set LB_PORT_BASE",
                    " to another base)\n")
    os.exit(1)
  end
end' || exit 1
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    render "$NAME.nginx.conf" > "$CONF"
    if [ "$NAME" = discovery ] && [ ! -f "$DIR/backends.txt" ]; then
        render backends.txt > "$DIR/backends.txt"
    fi
    if ! timeout -k 2 10 nginx -p "$ROOT/" -c "$CONF" ||
        ! wait_until 50 test -s "$PIDFILE"; then
        echo "tools/example.sh: nginx did not start; $DIR/$NAME.error.log:" >&2
        tail -20 "$DIR/$NAME.error.log" >&2 2>/dev/null || true
        exit 1
    fi
    echo "started: pid $(cat "$PIDFILE")"
    urls
    ;;
stop)
    if running; then
        pid=$(cat "$PIDFILE")
        kids=$(children "$pid")
        nginx -p "$ROOT/" -c "$CONF" -s stop 2>/dev/null || kill -TERM "$pid"
        wait_until 100 dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
        for k in $kids; do
            wait_until 50 dead "$k" || kill -KILL "$k" 2>/dev/null || true
        done
        echo "stopped: pid $pid"
    fi
    case $DIR in */lb-example.$NAME.$P0) rm -rf "$DIR" ;; esac
    ;;
reload)
    running || {
        echo "tools/example.sh: $NAME does not run" >&2
        exit 1
    }
    render "$NAME.nginx.conf" > "$CONF"
    nginx -p "$ROOT/" -c "$CONF" -s reload
    echo "reloaded: pid $(cat "$PIDFILE")"
    ;;
esac
