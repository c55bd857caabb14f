-- bench/keepalive_order.lua - requests per second of a front nginx with lb
-- in balancer_by_lua and `keepalive 16` written after
-- `balancer_by_lua_block` (the right order) and before it (the keepalive
-- module's method replaced: a new upstream connection per request).
--
-- One backend nginx (one worker, answering its connection's serial
-- number), two fronts with one worker each (spec/support/keepalive_order
-- .lua).  wrk (1 thread, BENCH_CONNECTIONS connections, default 16) loads
-- one front at a time for BENCH_DURATION seconds (default 3), the two
-- orders interleaved, BENCH_ROUNDS times (default 3); reported: the median
-- requests/s of each order, their ratio, the backend connections a
-- sequential run of 200 requests opened, and whether `nginx -t` warns
-- "load balancing method redefined".  Figures are reported, not checked
-- (the machine is shared; spec/83 checks the connections and the
-- warning).  Run from the repository root after `make` (make bench-nginx).
package.path = "bench/?.lua;lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local nginx = require("support.nginx")
local ko = require("support.keepalive_order")

local DURATION = tonumber(os.getenv("BENCH_DURATION")) or 3
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS")) or 16
local ORDERS = { "after", "before" }

local median = require("stats").median

local ok, err = pcall(function()
  local backend = ko.backend()
  local fronts, rps, info = {}, {}, {}
  for _, order in ipairs(ORDERS) do
    fronts[order] = assert(ko.front(order, backend.addr))
    rps[order] = {}
    local paths = {}
    for i = 1, 200 do
      paths[i] = "/r/" .. i
    end
    local conns = ko.connections(assert(nginx.get_many(fronts[order].addr,
                                                       paths)))
    info[order] = { warned = ko.warned(fronts[order]), conns = conns }
  end
  for round = 1, ROUNDS do
    for k = 1, #ORDERS do
      -- rotate which order goes first
      local order = ORDERS[(k + round) % #ORDERS + 1]
      local load = assert(nginx.wrk(fronts[order].url,
                                    { duration = DURATION,
                                      connections = CONNS }))
      local r = assert(load:wait())
      assert(r.failed == 0, order .. ": " .. r.failed .. " failed requests")
      rps[order][#rps[order] + 1] = r.rps
    end
  end
  print(("keepalive order, %d rounds of %d s, %d connections, one worker"
         .. " per nginx"):format(ROUNDS, DURATION, CONNS))
  for _, order in ipairs(ORDERS) do
    print(("  keepalive %-6s balancer_by_lua_block: %8.0f req/s (median)"
           .. "  backend connections for 200 requests: %3d  warning: %s")
          :format(order, median(rps[order]), info[order].conns,
                  info[order].warned and "yes" or "no"))
  end
  print(("  ratio after/before: %.2f"):format(median(rps.after)
                                              / median(rps.before)))
end)
nginx.stop_all()
if not ok then
  io.stderr:write("keepalive_order: ", tostring(err), "\n")
  os.exit(1)
end
