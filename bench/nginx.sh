#!/bin/sh
# make bench-nginx: nginx's cost per request with lb in balancer_by_lua,
# against nginx's native upstreams and a fixed-peer balancer_by_lua.
#
# One front nginx with ONE worker serves five variants on five loopback
# ports, all in front of the same three backends (one backend nginx):
#
#   native_rr     upstream round robin
#   native_chash  upstream hash $request_uri consistent
#   lua_fixed     balancer_by_lua that sets one fixed peer (the floor of
#                 any Lua balancer)
#   lb_rr         lb round_robin through lb.nginx
#   lb_chash      lb consistent by request_uri through lb.nginx
#   lb_rr_log     lb round_robin with passive health: balance() counts the
#                 attempt in flight, log_by_lua's peer:log() releases it
#                 and reports its status (the cost of peer:log(), against
#                 lb_rr)
#   lb_rr_emptylog lb_rr with an empty log_by_lua_block: the floor of any
#                 log-phase Lua handler, so lb_rr_log - lb_rr_emptylog is
#                 what peer:log() itself costs
#   lb_rr_log_base lb_rr_log with the lb.nginx of another tree
#                 (BENCH_BASE=<tree>: its lua/lb/nginx.lua, over this
#                 tree's lb), the baseline of a change to balance() or
#                 log(); only when BENCH_BASE is set
#
# BENCH_VARIANTS picks variants (default: all); the wrk part's "vs"
# columns need lua_fixed.  BENCH_WRK=0 skips the wrk rounds (then the
# instruction counts come without the CPU-time estimate).
# BENCH_CALLGRIND_DIR=<dir> keeps each callgrind run's profile there
# (callgrind.<variant>.<requests>), for callgrind_annotate.
#
# wrk (1 thread, 16 connections, a different URI per request) loads one
# variant at a time for BENCH_DURATION seconds; the variants run
# interleaved (the order rotates), BENCH_ROUNDS times.  Upstream keepalive
# (64 > 16 connections, keepalive_requests 1e6) means no run churns
# connections.  Reported per variant: the median requests/s and the median
# front-worker CPU time per request (utime+stime from /proc/<pid>/stat,
# divided by the requests of the run).  Figures are reported, not checked:
# this machine is shared and drifts between runs.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${BENCH_DURATION:-3}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-16}
BASE=${BENCH_BASE:-}
ALL="native_rr native_chash lua_fixed lb_rr lb_chash lb_rr_log lb_rr_emptylog"
[ -z "$BASE" ] || ALL="$ALL lb_rr_log_base"
VARIANTS=${BENCH_VARIANTS:-$ALL}
[ -z "$BASE" ] || [ -f "$BASE/lua/lb/nginx.lua" ] || { echo "bench-nginx: no $BASE/lua/lb/nginx.lua" >&2; exit 1; }

command -v wrk >/dev/null || { echo "bench-nginx: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -f build/lb/core.so ] || make

. tools/procs.sh
DIR=$(mktemp -d "$(lb_tmpdir)/lb-bench-nginx.XXXXXXXX")
chmod 755 "$DIR"
PREFIXES=""

WRK_PID=""
VG_PID=""
cleanup() {
    if [ -n "$WRK_PID" ] && alive "$WRK_PID"; then kill -TERM "$WRK_PID" 2>/dev/null || true; fi
    if [ -n "$VG_PID" ] && alive "$VG_PID"; then kill -KILL "$VG_PID" 2>/dev/null || true; fi
    for p in $PREFIXES; do stop_nginx "$p"; done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set -- $(free_ports 11)
B1=$1 B2=$2 B3=$3
P_native_rr=$4 P_native_chash=$5 P_lua_fixed=$6 P_lb_rr=$7 P_lb_chash=$8
P_lb_rr_log=$9 P_lb_rr_emptylog=${10} P_lb_rr_log_base=${11}

head_conf() {
    cat <<EOF
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
EOF
}

mkdir -p "$DIR/backend" "$DIR/front"
{
    head_conf "$DIR/backend"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $DIR/backend/body;
    server {
        listen 127.0.0.1:$B1;
        listen 127.0.0.1:$B2;
        listen 127.0.0.1:$B3;
        location / { return 200 "ok"; }
    }
}
EOF
} > "$DIR/backend/nginx.conf"

LOCATION='
        location / {
            proxy_pass http://UP;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }'
server_block() { # port upstream
    loc=$(printf '%s' "$LOCATION" | sed "s/UP/$2/")
    if [ "$2" = lb_rr_emptylog ]; then
        loc=$(printf '%s' "$loc" | sed 's|proxy_pass http://lb_rr_emptylog|log_by_lua_block { }\n            proxy_pass http://lb_rr|')
    fi
    if [ "$2" = lb_rr_log ] || [ "$2" = lb_rr_log_base ]; then
        loc=$(printf '%s' "$loc" | sed "s|proxy_pass|log_by_lua_block { bench_${2#lb_}:log() }\\n            proxy_pass|")
    fi
    printf '    server {\n        listen 127.0.0.1:%s;%s\n    }\n' "$1" "$loc"
}
SERVERS="        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        server 127.0.0.1:$B3;"
{
    echo "load_module /usr/share/nginx/modules/ndk_http_module.so;"
    echo "load_module /usr/share/nginx/modules/ngx_http_lua_module.so;"
    head_conf "$DIR/front"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $DIR/front/body;
    proxy_temp_path $DIR/front/proxy;
    lua_package_path "$ROOT/lua/?.lua;;";
    lua_package_cpath "$ROOT/build/?.so;;";

    init_by_lua_block {
        local lb = require("lb")
        local lbn = require("lb.nginx")
        local list = { "127.0.0.1:$B1", "127.0.0.1:$B2", "127.0.0.1:$B3" }
        local rr = assert(lb.new({ backends = list }))
        local ch = assert(lb.new({ backends = list, selection = "consistent" }))
        bench_rr = assert(lbn.new(rr))
        bench_chash = assert(lbn.new(ch, { key = "request_uri" }))
        local rrp = assert(lb.new({ backends = list, passive = {} }))
        bench_rr_log = assert(lbn.new(rrp))
        if "$BASE" ~= "" then
            local base = assert(loadfile("$BASE/lua/lb/nginx.lua"))()
            local rrb = assert(lb.new({ backends = list, passive = {} }))
            bench_rr_log_base = assert(base.new(rrb))
        end
    }

    upstream native_rr {
$SERVERS
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream native_chash {
        hash \$request_uri consistent;
$SERVERS
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream lua_fixed {
        server 127.0.0.1:1;
        balancer_by_lua_block {
            require("ngx.balancer").set_current_peer("127.0.0.1", $B1)
        }
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream lb_rr {
        server 127.0.0.1:1;
        balancer_by_lua_block { bench_rr:balance() }
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream lb_chash {
        server 127.0.0.1:1;
        balancer_by_lua_block { bench_chash:balance() }
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream lb_rr_log {
        server 127.0.0.1:1;
        balancer_by_lua_block { bench_rr_log:balance() }
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream lb_rr_log_base {
        server 127.0.0.1:1;
        balancer_by_lua_block { bench_rr_log_base:balance() }
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
    for v in $VARIANTS; do
        eval "port=\$P_$v"
        server_block "$port" "$v"
    done
    echo "}"
} > "$DIR/front/nginx.conf"

for p in backend front; do start_nginx "$DIR/$p"; done
one_worker() { [ "$(children "$(cat "$DIR/front/nginx.pid")" | wc -w)" = 1 ]; }
wait_until 50 one_worker || true
WORKER=$(children "$(cat "$DIR/front/nginx.pid")")
[ "$(echo "$WORKER" | wc -w)" = 1 ] || { echo "expected one front worker, got: $WORKER" >&2; exit 1; }
TCK=$(getconf CLK_TCK)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$WORKER/stat"; }
user_ticks() { awk '{ print $14 }' "/proc/$WORKER/stat"; }

# run VARIANT SECONDS -> "requests rps ticks errors user_ticks"
run() {
    eval "port=\$P_$1"
    t0=$(cpu_ticks)
    u0=$(user_ticks)
    wrk -t 1 -c "$CONNS" -d "${2}s" -s bench/nginx/keys.lua \
        "http://127.0.0.1:$port/" > "$DIR/wrk.out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || true
    WRK_PID=""
    t1=$(cpu_ticks)
    u1=$(user_ticks)
    awk -v t="$((t1 - t0))" -v u="$((u1 - u0))" '
        / requests in / { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx/ { err += $NF }
        /Socket errors/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
        END { printf "%d %.0f %d %d %d\n", req, rps, t, err + 0, u }' "$DIR/wrk.out"
}

: > "$DIR/results"
: > "$DIR/medians"
if [ "${BENCH_WRK:-1}" != 0 ]; then
echo "bench-nginx: 1 front worker, wrk -t1 -c$CONNS, ${DURATION}s per run, $ROUNDS rounds, interleaved"
echo "warming up (1 s per variant)"
for v in $VARIANTS; do run "$v" 1 > /dev/null; done

: > "$DIR/results"
r=1
order=$VARIANTS
while [ "$r" -le "$ROUNDS" ]; do
    for v in $order; do
        set -- $(run "$v" "$DURATION")
        us=$(awk -v t="$3" -v n="$1" -v h="$TCK" 'BEGIN { printf "%.2f", n ? t * 1e6 / h / n : 0 }')
        uus=$(awk -v t="$5" -v n="$1" -v h="$TCK" 'BEGIN { printf "%.2f", n ? t * 1e6 / h / n : 0 }')
        printf '  round %d  %-13s %8s req/s  %6s us CPU/request (user %s)  errors %s\n' "$r" "$v" "$2" "$us" "$uus" "$4"
        echo "$v $2 $us $4 $uus" >> "$DIR/results"
    done
    # rotate the order: first variant goes last
    first=${order%% *}
    order="${order#* } $first"
    r=$((r + 1))
done

echo
echo "medians over $ROUNDS rounds (CPU: the front worker's utime+stime / requests);"
echo "the best round too: interference from other tenants only ever adds CPU time"
printf '  %-13s %10s %12s %14s %12s %14s\n' variant "req/s" "us CPU/req" "vs lua_fixed" "best us/req" "best vs fixed"
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
for v in $VARIANTS; do
    rps=$(awk -v v="$v" '$1 == v { print $2 }' "$DIR/results" | median)
    us=$(awk -v v="$v" '$1 == v { print $3 }' "$DIR/results" | median)
    best=$(awk -v v="$v" '$1 == v { print $3 }' "$DIR/results" | sort -n | head -n 1)
    user=$(awk -v v="$v" '$1 == v { print $5 }' "$DIR/results" | median)
    echo "$v $rps $us $best $user"
done > "$DIR/medians"
awk '
    { rps[$1] = $2; us[$1] = $3; best[$1] = $4; order[NR] = $1 }
    END {
        for (i = 1; i <= NR; i++) {
            v = order[i]
            printf "  %-13s %10.0f %12.2f %+12.2fus %12.2f %+12.2fus   %5.1f%% of native_rr req/s\n",
                   v, rps[v], us[v], us[v] - us["lua_fixed"], best[v],
                   best[v] - best["lua_fixed"], rps["native_rr"] ? 100 * rps[v] / rps["native_rr"] : 0
        }
    }' "$DIR/medians"
errors=$(awk '{ e += $4 } END { print e + 0 }' "$DIR/results")
echo "  failed requests over all runs: $errors"
fi

# ---- instructions per request, under callgrind ----------------------------
# CPU time per request drifts with the other tenants of this machine; the
# instructions a request executes do not.  The front runs as one process
# (master_process off) under valgrind's callgrind, once serving N1 and once
# N2 requests of one variant (one keep-alive connection, one request at a
# time, URIs /k/1, /k/2, ...); (Ir(N2) - Ir(N1)) / (N2 - N1) is the
# variant's instructions per request, start-up, JIT warm-up and shutdown
# cancelled out.  BENCH_INSTRUCTIONS=0 skips this part.
N1=${BENCH_INSTR_N1:-1000}
N2=${BENCH_INSTR_N2:-3000}
[ "${BENCH_INSTRUCTIONS:-1}" != 0 ] || exit 0
command -v valgrind >/dev/null || { echo "valgrind not installed: no instruction counts"; exit 0; }

stop_nginx "$DIR/front"
mkdir -p "$DIR/front1"
{ sed "s|$DIR/front/|$DIR/front1/|g" "$DIR/front/nginx.conf"
  echo "daemon off;"
  echo "master_process off;"; } > "$DIR/front1/nginx.conf"
accepting() {
    luajit -e "assert(require('socket').connect('127.0.0.1', $1))" 2>/dev/null
}

# instr VARIANT N: appends to $DIR/instr.VARIANT the instructions of a
# front process that served N requests
instr() {
    eval "port=\$P_$1"
    log="$DIR/callgrind.$1.$2.log"
    out=/dev/null
    [ -z "${BENCH_CALLGRIND_DIR:-}" ] || out="$BENCH_CALLGRIND_DIR/callgrind.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$out" --log-file="$log" \
        nginx -p "$DIR/front1" -c "$DIR/front1/nginx.conf" &
    VG_PID=$!
    wait_until 600 accepting "$port" || { echo "front under valgrind did not start" >&2; exit 1; }
    luajit bench/nginx/requests.lua "127.0.0.1:$port" 1 "$2" || exit 1
    kill -QUIT "$VG_PID"
    wait "$VG_PID" || true
    VG_PID=""
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log" >> "$DIR/instr.$1"
}

echo
echo "instructions per request (callgrind; requests $((N1 + 1))..$N2 of each variant, one connection):"
: > "$DIR/instr"
for v in $VARIANTS; do
    instr "$v" "$N1"
    instr "$v" "$N2"
    echo "$v $(cat "$DIR/instr.$v" | tr '\n' ' ')" >> "$DIR/instr"
done
awk -v n1="$N1" -v n2="$N2" '
    FILENAME == ARGV[1] { user[$1] = $5; next }
    { ir[$1] = ($3 - $2) / (n2 - n1); order[++n] = $1 }
    END {
        f = ir["lua_fixed"]; nspi = f ? 1000 * user["lua_fixed"] / f : 0
        printf "  %-14s %12s %14s %22s\n", "variant", "Ir/request", "vs lua_fixed", "as CPU time (est.)"
        for (i = 1; i <= n; i++) {
            v = order[i]
            printf "  %-14s %12.0f %+14.0f %+20.2fus\n", v, ir[v], ir[v] - f, (ir[v] - f) * nspi / 1000
        }
        if ("lb_rr_emptylog" in ir) {
            if ("lb_rr_log" in ir)
                printf "  peer:log(): lb_rr_log - lb_rr_emptylog = %+.0f Ir/request\n", ir["lb_rr_log"] - ir["lb_rr_emptylog"]
            if ("lb_rr_log_base" in ir)
                printf "  peer:log() of the base: lb_rr_log_base - lb_rr_emptylog = %+.0f Ir/request\n", ir["lb_rr_log_base"] - ir["lb_rr_emptylog"]
        }
        printf "  (callgrind counts user-space instructions; the estimate prices one at\n"
        printf "   lua_fixed'"'"'s median user CPU time per request divided by its\n"
        printf "   instructions per request, measured above: %.3f ns)\n", nspi
    }' "$DIR/medians" "$DIR/instr"
