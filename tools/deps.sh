#!/bin/sh
# Install the Debian packages lb needs for building, testing and the demo,
# when any is missing.  Run as root on Debian 12.
set -e

PKGS="build-essential luajit2 libluajit2-5.1-dev liburcu-dev lua-busted \
luarocks nginx-light libnginx-mod-http-lua lua-resty-core lua-socket \
lua-cjson libssl-dev openssl zip unzip clang libclang-rt-14-dev curl wrk lua-check \
valgrind clang-format prometheus chromium libc-ares-dev libcurl4-openssl-dev \
libjansson-dev dnsmasq-base etcd-server etcd-client lua5.1"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "installing:$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages:$missing (run as root, or install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
