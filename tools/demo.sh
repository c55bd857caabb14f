#!/bin/sh
# make demo: nginx with lb in balancer_by_lua in front of three loopback
# backends.  Installs what is missing (Debian 12, as root), builds, sends
# traffic and prints the split, stops one backend and shows the traffic
# moving away (and the status page), brings it back, and stops everything
# it started.  Everything listens on 127.0.0.1 only.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)

sh tools/deps.sh
make

DIR=$(mktemp -d /tmp/lb-demo.XXXXXXXX)
chmod 755 "$DIR"
PREFIXES=""

# Stop every nginx this script started (by the pid in its pid file), then
# remove the directory.
cleanup() {
    for p in $PREFIXES; do
        stop_nginx "$p"
    done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. tools/procs.sh

# Three free loopback ports for the backends, one for the front.
set -- $(free_ports 4)
B1=127.0.0.1:$1 B2=127.0.0.1:$2 B3=127.0.0.1:$3 FRONT=127.0.0.1:$4

common() {
    cat <<EOF
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 1024; }
EOF
}

# A backend: its own nginx, so that it can be stopped alone.
backend_conf() {
    common "$DIR/$1"
    cat <<EOF
worker_processes 1;
http {
    access_log off;
    client_body_temp_path $DIR/$1/body;
    server {
        listen $2;
        location / { return 200 "$2"; }
    }
}
EOF
}

for b in b1:$B1 b2:$B2 b3:$B3; do
    name=${b%%:*} addr=${b#*:}
    mkdir -p "$DIR/$name"
    backend_conf "$name" "$addr" > "$DIR/$name/nginx.conf"
done

mkdir -p "$DIR/front"
{
    echo "load_module /usr/share/nginx/modules/ndk_http_module.so;"
    echo "load_module /usr/share/nginx/modules/ngx_http_lua_module.so;"
    common "$DIR/front"
    cat <<EOF
worker_processes 2;
http {
    access_log off;
    client_body_temp_path $DIR/front/body;
    proxy_temp_path $DIR/front/proxy;
    lua_package_path "$ROOT/lua/?.lua;;";
    lua_package_cpath "$ROOT/build/?.so;;";

    init_by_lua_block {
        local lb = require("lb")
        app = assert(lb.new({
            backends = { { addr = "$B1", weight = 1 },
                         { addr = "$B2", weight = 2 },
                         { addr = "$B3", weight = 3 } },
            health_check = lb.health.tcp({ timeout = 0.5 }),
            health_check_frequency = 0.5,
            on_health_change = function(b, healthy, err)
                ngx.log(ngx.WARN, "lb: ", b.addr, healthy and " up" or " down: ",
                        err or "")
            end,
        }))
        app_peer = assert(require("lb.nginx").new(app, { tries = 3 }))
    }
    init_worker_by_lua_block { assert(app:start()) }

    upstream app {
        server 127.0.0.1:1;
        balancer_by_lua_block { app_peer:balance() }
        keepalive 32;
    }
    server {
        listen $FRONT reuseport;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
        }
        location = /lb-status {
            content_by_lua_block { require("lb.nginx").status(app) }
        }
    }
}
EOF
} > "$DIR/front/nginx.conf"

for p in b1 b2 b3 front; do start_nginx "$DIR/$p"; done
echo
echo "nginx (2 workers) on $FRONT with lb in balancer_by_lua, round robin"
echo "over $B1 (weight 1), $B2 (weight 2), $B3 (weight 3)"

# Send N requests over 8 kept-alive connections; print the split.
traffic() {
    luajit - "$FRONT" "$1" <<'EOF'
package.path = "spec/?.lua;" .. package.path
local nginx = require("support.nginx")
local addr, n = arg[1], tonumber(arg[2])
local reqs = {}
for i = 1, n do reqs[i] = "/demo/" .. i end
local res = assert(nginx.get_spread(addr, reqs, 8))
local by, failed = {}, 0
for _, r in ipairs(res) do
  if r.status == 200 then by[r.body] = (by[r.body] or 0) + 1
  else failed = failed + 1 end
end
local names = {}
for k in pairs(by) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  print(("    %-20s %5d  %5.1f%%  %s"):format(k, by[k], 100 * by[k] / n,
        string.rep("#", math.floor(50 * by[k] / n + 0.5))))
end
print(("    failed: %d of %d"):format(failed, n))
EOF
}

status() {
    curl -s "http://$FRONT/lb-status"
}

# True when both workers report $1 with "healthy":$2.
both_workers() {
    seen=""
    for _ in 1 2 3 4 5 6 7 8; do
        out=$(curl -s -D - "http://$FRONT/lb-status") || return 1
        w=$(printf '%s' "$out" | sed -n 's/^X-LB-Worker: *\([0-9]*\).*/\1/p')
        printf '%s' "$out" | tr '{' '\n' | grep "\"$1\"" | grep -q "\"healthy\":$2" || return 1
        case " $seen " in *" $w "*) ;; *) seen="$seen $w" ;; esac
    done
    [ "$(echo $seen | wc -w)" -ge 2 ]
}

echo
echo "== 6000 requests, all backends up (expect 1:2:3)"
traffic 6000

echo
echo "== stopping backend $B2"
stop_nginx "$DIR/b2"
wait_until 50 both_workers "$B2" false || echo "    (checks have not marked it down in every worker yet)"
echo "== 6000 requests with $B2 down"
traffic 6000
echo
echo "== status page (GET /lb-status, one worker's view):"
status | sed 's/},{/},\n  {/g; s/^\[{/[\n  {/; s/\]$/\n]/'

echo
echo "== starting $B2 again"
start_nginx "$DIR/b2"
wait_until 50 both_workers "$B2" true || echo "    (checks have not marked it up in every worker yet)"
echo "== 6000 requests, all backends up again"
traffic 6000
echo
echo "stopping everything the demo started"
