-- lb: load balancing for LuaJIT and OpenResty, with a C core.
--
--   local lb = require("lb")
--   local b = assert(lb.new({ backends = { "127.0.0.1:8081", "[::1]:8082" },
--                             selection = "consistent" }))
--   local backend = b:select(key)
--
-- The module is the public face only; each concern has its file:
--   lb.balancer   the Balancer (select path, set, health, background)
--   lb.driver     the background driver (ngx.timer, or poll() in plain Lua)
--   lb.args       argument checking (names and types; limits come from C)
--   lb.backend    backend tables and their decoding
--   lb.health     health-check descriptors (lb.health.tcp{}, ...)
--   lb.discovery  lb.discovery.static{}
--   lb.cdef       the FFI declarations of lb.core, and the library
--   lb.nginx      the OpenResty balancer_by_lua* helper
--   lb.metrics    the Prometheus exposition
--   lb.status_page  the HTML status page

-- lb binds its C core with LuaJIT's FFI: any other Lua has no ffi module.
-- luacheck: globals jit
if type(jit) ~= "table" then
  error("lb needs LuaJIT (its FFI binds lb's C core): this is "
        .. tostring(_VERSION) .. "; run it with luajit, or in OpenResty",
        2)
end

local core = require("lb.cdef")
local args = require("lb.args")
local balancer = require("lb.balancer")
local driver = require("lb.driver")

local lb = {
  _VERSION = "0.2.0",
  discovery = require("lb.discovery"),
  health = require("lb.health"),
  DEFAULT_MAX_ITERATIONS = core.DEFAULT_MAX_ITERATIONS,
  Balancer = balancer.Balancer,
  EVENT_INTERVAL = balancer.EVENT_INTERVAL,
  -- monotonic seconds
  now = driver.now,
  -- the max_iterations rule shared with lb.nginx.new (error text or nil)
  _max_iterations_error = args.max_iterations_error,
}

-- Build a balancer: the balancer, or nil, err naming the bad entry.
lb.new = balancer.new

-- The Prometheus text exposition of { name = balancer, ... }.
function lb.metrics(what)
  return require("lb.metrics").render(what)
end

return lb
