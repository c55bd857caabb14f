-- lb in a plain LuaJIT program: consistent hashing, health checks on the C
-- thread, discovery driven by poll().
--
-- Run from the repository root, after `make`:
--
--   luajit examples/plain.lua        # or: sh tools/example.sh plain start
--
-- It listens on two loopback ports itself (LuaSocket) so that the health
-- check finds them up, and names a third port that nothing listens on.

local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]+$") or "."
package.path = root .. "/lua/?.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath

local lb = require("lb")
local socket = require("socket")

-- Two listening sockets stand in for live backends.
local live = {}
for i = 1, 2 do
  live[i] = assert(socket.bind("127.0.0.1", 0))
end
local function addr_of(s)
  local host, port = s:getsockname()
  return host .. ":" .. port
end
local dead = assert(socket.bind("127.0.0.1", 0))
local dead_addr = addr_of(dead)
dead:close() -- nothing listens there any more

local source = lb.discovery.static({ addr_of(live[1]), addr_of(live[2]),
                                     dead_addr })
local changes = 0
local app = assert(lb.new({
  discovery = source,
  selection = "consistent",
  health_check = lb.health.tcp({ timeout = 0.5 }),
  health_check_frequency = 0.2,
  update_frequency = 0.2,
  on_health_change = function(backend, healthy, err)
    changes = changes + 1
    print(("health: %s is %s%s"):format(backend.addr,
                                        healthy and "up" or "down",
                                        err and (" (" .. err .. ")") or ""))
  end,
}))

-- One round now; on_health_change has run for its flips when it returns.
assert(app:run_health_check())

local counts = {}
for i = 1, 1000 do
  local b = app:select("user-" .. i)
  counts[b.addr] = (counts[b.addr] or 0) + 1
end
for _, b in ipairs(app:backends()) do
  print(("%-22s ready=%-5s keys=%d"):format(b.addr, tostring(app:ready(b)),
                                            counts[b.addr] or 0))
end

-- The same key goes to the same backend while the set is unchanged.
assert(app:select("user-42") == app:select("user-42"))

-- Background mode: checks on the C thread, discovery when poll() runs.
assert(app:start())
source:remove(addr_of(live[2]))
local deadline = lb.now() + 3
while #app:backends() ~= 2 and lb.now() < deadline do
  app:poll()
  socket.sleep(0.05)
end
app:stop()
print(("after removing %s: %d backends"):format(addr_of(live[2]),
                                                #app:backends()))

for _, row in ipairs(app:status()) do
  print(("status: %s healthy=%s enabled=%s ready=%s%s"):format(
    row.addr, tostring(row.healthy), tostring(row.enabled),
    tostring(row.ready), row.last_error and (" error=" .. row.last_error)
                         or ""))
end
for _, s in ipairs(live) do s:close() end
print("ok")
