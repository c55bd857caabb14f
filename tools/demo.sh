#!/bin/sh
# make demo: nginx with 4 workers and lb in balancer_by_lua in front of four
# loopback backends, one shared balancer (made in init_by_lua) for all the
# workers.  Installs what is missing (Debian 12, as root), builds, and shows:
#   - each worker's role (one prober, three readers) and that each backend
#     is probed once per check period, not once per worker;
#   - a passive ejection: one backend answers 500 (its health check passes),
#     peer:log() in log_by_lua reports it, it is ejected and clients see no
#     500 thanks to retries;
#   - the split of the traffic by weight, the status page and /metrics;
#   - a backend stopped (traffic moves away) and started again.
# Then it stops everything it started.  With KEEP=1 (make demo KEEP=1) it
# leaves everything running, prints the URLs and waits for Ctrl-C or
# `make demo-stop` (tools/demo.sh stop).  Everything listens on 127.0.0.1
# only; ports come from LB_PORT_BASE when set, temp files go under
# LB_TMPDIR (README, "Ports and temp directories").
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. tools/procs.sh
KEEP_FILE=$(lb_tmpdir)/lb-demo.keep

# tools/demo.sh stop: stop a demo kept running (by the pid it wrote).
if [ "${1:-}" = stop ]; then
    [ -f "$KEEP_FILE" ] || { echo "no demo kept running ($KEEP_FILE)"; exit 0; }
    pid=$(cat "$KEEP_FILE")
    if alive "$pid" && grep -q "tools/demo.sh" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid"
        wait_until 300 dead "$pid" || { echo "demo (pid $pid) did not stop" >&2; exit 1; }
        echo "demo (pid $pid) stopped"
    else
        echo "demo (pid $pid) is not running"
    fi
    rm -f "$KEEP_FILE"
    exit 0
fi

sh tools/deps.sh
make

DIR=$(mktemp -d "$(lb_tmpdir)/lb-demo.XXXXXXXX")
chmod 755 "$DIR"
PREFIXES=""

# Stop every nginx this script started (by the pid in its pid file), then
# remove the directory.
cleanup() {
    for p in $PREFIXES; do
        stop_nginx "$p"
    done
    rm -rf "$DIR"
    if [ "${KEEP:-}" = 1 ] && [ "$(cat "$KEEP_FILE" 2>/dev/null)" = "$$" ]; then
        rm -f "$KEEP_FILE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Four backend ports and the front's, asked for at once (all different).
set -- $(free_ports 5)
B1=127.0.0.1:$1 B2=127.0.0.1:$2 B3=127.0.0.1:$3 B4=127.0.0.1:$4
FRONT=127.0.0.1:$5
WORKERS=4 PERIOD=1

common() {
    cat <<EOF
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 1024; }
EOF
}

# A backend: its own nginx, so that it can be stopped alone.  It logs the
# health checks it answers (one line each), to count them.  $3: the status
# of every other request (b4 answers 500).
backend_conf() {
    common "$DIR/$1"
    cat <<EOF
worker_processes 1;
http {
    access_log off;
    client_body_temp_path $DIR/$1/body;
    server {
        listen $2;
        location = /health {
            access_log $DIR/$1/health.log;
            return 200 "ok\n";
        }
        location / { return $3 "$2"; }
    }
}
EOF
}

for b in b1:$B1:200 b2:$B2:200 b3:$B3:200 b4:$B4:500; do
    name=${b%%:*} rest=${b#*:}
    addr=${rest%:*} status=${rest##*:}
    mkdir -p "$DIR/$name"
    backend_conf "$name" "$addr" "$status" > "$DIR/$name/nginx.conf"
done

mkdir -p "$DIR/front"
{
    echo "load_module /usr/share/nginx/modules/ndk_http_module.so;"
    echo "load_module /usr/share/nginx/modules/ngx_http_lua_module.so;"
    common "$DIR/front"
    cat <<EOF
worker_processes $WORKERS;
http {
    access_log off;
    client_body_temp_path $DIR/front/body;
    proxy_temp_path $DIR/front/proxy;
    lua_package_path "$ROOT/lua/?.lua;;";
    lua_package_cpath "$ROOT/build/?.so;;";
    lua_shared_dict demo 1m;

    # In the master, before the workers fork: one balancer in shared memory.
    init_by_lua_block {
        local lb = require("lb")
        app = assert(lb.new({
            backends = { { addr = "$B1", weight = 1 },
                         { addr = "$B2", weight = 2 },
                         { addr = "$B3", weight = 3 },
                         { addr = "$B4", weight = 1 } },
            selection = "weighted_round_robin",   -- keeps the weights while one is out
            shared = true,
            health_check = lb.health.http({ path = "/health", timeout = 0.5 }),
            health_check_frequency = $PERIOD,
            passive = { consecutive_failures = 3, ejection_time = 10,
                        max_ejection_time = 60, max_ejection_percent = 50,
                        failure_status = { 500, 502, 503, 504 } },
            on_health_change = function(b, healthy, err)
                ngx.log(ngx.WARN, "lb: ", b.addr, healthy and " up" or " down: ",
                        err or "")
            end,
        }))
        app_peer = assert(require("lb.nginx").new(app, { tries = 3 }))
    }
    # Every worker: start (only the prober's checks run) and say its role.
    init_worker_by_lua_block {
        assert(app:start())
        ngx.timer.every(0.2, function()
            ngx.shared.demo:set("role:" .. ngx.worker.pid(),
                                app:role() .. " " .. ngx.now())
        end)
    }

    upstream app {
        server 127.0.0.1:1;    # placeholder: balance() always sets the peer
        balancer_by_lua_block { app_peer:balance() }
        keepalive 32;          # after balancer_by_lua_block
    }
    server {
        listen $FRONT reuseport;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_500 http_502 http_503 http_504;
            log_by_lua_block {
                app_peer:log()    -- every attempt: released, status reported
                local n = 0
                for _ in (ngx.var.upstream_status or ""):gmatch("500") do
                    n = n + 1
                end
                if n > 0 then ngx.shared.demo:incr("upstream_500", n, 0) end
            }
        }
        location = /lb-status {
            content_by_lua_block { require("lb.nginx").status(app) }
        }
        location = /status {
            content_by_lua_block {
                require("lb.nginx").status_page({ app = app }, { refresh = 2 })
            }
        }
        location = /metrics {
            content_by_lua_block { require("lb.nginx").metrics({ app = app }) }
        }
        # each worker's role, as it wrote it in the last 0.2 s
        location = /roles {
            content_by_lua_block {
                local d = ngx.shared.demo
                for _, k in ipairs(d:get_keys(0)) do
                    local pid = k:match("^role:(%d+)")
                    local role, at = (d:get(k) or ""):match("(%S+) (%S+)")
                    if pid and ngx.now() - tonumber(at) < 1 then
                        ngx.say(pid, " ", role)
                    end
                end
            }
        }
        location = /upstream-500 {
            content_by_lua_block { ngx.say(ngx.shared.demo:get("upstream_500") or 0) }
        }
    }
}
EOF
} > "$DIR/front/nginx.conf"

for p in b1 b2 b3 b4 front; do start_nginx "$DIR/$p"; done
wait_until 100 curl -sf "http://$FRONT/lb-status" || { echo "the front does not answer" >&2; exit 1; }
echo
echo "nginx ($WORKERS workers) on $FRONT with lb in balancer_by_lua, one shared"
echo "balancer, smooth weighted round robin over $B1 (weight 1), $B2 (weight 2),"
echo "$B3 (weight 3) and $B4 (weight 1, answers 500 but passes its health check)"

# luajit with lb and the spec helpers on the path; the script on stdin.
lua() { luajit - "$@"; }
LUA_PRE='package.path = "spec/?.lua;lua/?.lua;" .. package.path
local nginx = require("support.nginx")
local cjson = require("cjson")'

# Send N requests over 8 kept-alive connections; print the split.
traffic() {
    lua "$FRONT" "$1" <<EOF
$LUA_PRE
local addr, n = arg[1], tonumber(arg[2])
local reqs = {}
for i = 1, n do reqs[i] = "/demo/" .. i end
local res = assert(nginx.get_spread(addr, reqs, 8))
local by, status = {}, {}
for _, r in ipairs(res) do
  status[r.status] = (status[r.status] or 0) + 1
  if r.status == 200 then by[r.body] = (by[r.body] or 0) + 1 end
end
local names = {}
for k in pairs(by) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  print(("    %-20s %5d  %5.1f%%  %s"):format(k, by[k], 100 * by[k] / n,
        string.rep("#", math.floor(50 * by[k] / n + 0.5))))
end
local codes = {}
for code, c in pairs(status) do codes[#codes + 1] = code .. ": " .. c end
table.sort(codes)
print("    clients got " .. table.concat(codes, ", ") .. " (of " .. n .. ")")
EOF
}

# The status rows (GET /lb-status; the same from every worker: shared).
status_rows() {
    lua "$FRONT" <<EOF
$LUA_PRE
local r = assert(nginx.get(arg[1], "/lb-status"))
print(("    %-20s %6s %7s %5s %7s %9s %8s"):format("backend", "weight", "healthy",
      "ready", "ejected", "ejections", "selected"))
for _, row in ipairs(cjson.decode(r.body)) do
  print(("    %-20s %6d %7s %5s %7s %9d %8d"):format(row.addr, row.weight,
        tostring(row.healthy), tostring(row.ready), tostring(row.ejected),
        row.ejections, row.selected))
end
EOF
}

# True when /lb-status shows backend $1 with "$2":$3.
row_is() {
    curl -s "http://$FRONT/lb-status" | tr '{' '\n' | grep "\"$1\"" | grep -q "\"$2\":$3"
}

# True when $WORKERS workers wrote their role lately, exactly one prober.
roles_settled() {
    out=$(curl -s "http://$FRONT/roles") || return 1
    [ "$(printf '%s\n' "$out" | grep -c .)" -eq "$WORKERS" ] &&
        [ "$(printf '%s\n' "$out" | grep -c ' prober$')" -eq 1 ]
}

echo
echo "== each worker's role (GET /roles)"
wait_until 100 roles_settled || echo "    (the roles have not settled yet)"
curl -s "http://$FRONT/roles" | sort -k2 | sed 's/^/    worker /'

echo
echo "== health checks each backend answered in 5 s (period ${PERIOD} s, $WORKERS workers)"
count() {
    n=$(grep -c . "$DIR/$1/health.log" 2>/dev/null) || true
    echo "${n:-0}"
}
a1=$(count b1) a2=$(count b2) a3=$(count b3) a4=$(count b4)
sleep 5
for b in b1:$a1 b2:$a2 b3:$a3 b4:$a4; do
    name=${b%%:*}
    n=$(($(count "$name") - ${b#*:}))
    echo "    $name: $n checks (one prober: about 5; one balancer per worker would make $((5 * WORKERS)))"
done

echo
echo "== 6000 requests, all backends up; $B4 answers 500 (expect 1:2:3 over the others)"
traffic 6000
echo "    attempts answered 500 and retried on another backend: $(curl -s "http://$FRONT/upstream-500")"
wait_until 50 row_is "$B4" ejected true || echo "    ($B4 is not ejected)"
status_rows

echo
echo "== the status page (GET /status), its rows as text:"
curl -s "http://$FRONT/status" | grep -o '<tr class=[^>]*>.*</tr>' | sed 's/<\/tr>/\n/g' |
    sed 's/<[^>]*>/ /g; s/  */ /g; s/^ */    /' | grep -v '^ *$' | head -6
echo
echo "== /metrics (a few lines):"
curl -s "http://$FRONT/metrics" |
    grep -E '^lb_(backend_ready|ejections_total|health_checks_total)\{' | head -12 | sed 's/^/    /'

echo
echo "== stopping backend $B2"
stop_nginx "$DIR/b2"
wait_until 50 row_is "$B2" ready false || echo "    (checks have not marked it down yet)"
echo "== 6000 requests with $B2 down (expect 1:3 over $B1 and $B3)"
traffic 6000

echo
echo "== starting $B2 again"
start_nginx "$DIR/b2"
wait_until 50 row_is "$B2" healthy true || echo "    (checks have not marked it up yet)"
echo "== 6000 requests, $B2 back"
traffic 6000
status_rows

if [ "${KEEP:-}" = 1 ]; then
    echo "$$" > "$KEEP_FILE"
    cat <<EOF

Everything keeps running (KEEP=1):
    front          http://$FRONT/
    status page    http://$FRONT/status
    status JSON    http://$FRONT/lb-status
    metrics        http://$FRONT/metrics
    worker roles   http://$FRONT/roles
    backends       $B1 $B2 $B3 $B4 (500), configs and logs in $DIR
Stop it with Ctrl-C, or from another shell: make demo-stop
EOF
    trap 'exit 0' TERM    # make demo-stop: a normal end
    while :; do sleep 1; done
fi
echo
echo "stopping everything the demo started"
