-- Shared helpers for the specs.
local lb = require("lb")

local M = {}

-- Build a balancer or fail the test with lb.new's error.
function M.new(opts)
  local b, err = lb.new(opts)
  assert(b, err)
  return b
end

-- The status() row of the backend with address `addr` (the first, if the
-- address is in the set at several weights), or nil.
function M.row(b, addr)
  for _, r in ipairs(b:status()) do
    if r.addr == addr then
      return r
    end
  end
end

-- Addresses of a list of backend tables.
function M.addrs(list)
  local out = {}
  for i, b in ipairs(list) do
    out[i] = b.addr
  end
  return out
end

-- Pick counts over n selections.
function M.count_picks(b, n, keyf)
  local counts = {}
  for i = 1, n do
    local be = b:select(keyf and keyf(i) or nil)
    local a = be and be.addr or "nil"
    counts[a] = (counts[a] or 0) + 1
  end
  return counts
end

-- Wait until fn() returns a truthy value or the deadline passes; returns
-- that value (or nil).  `step` runs between tries (e.g. balancer:poll()).
-- The polling is support.nginx's wait_for.
function M.wait_for(fn, timeout, step)
  return require("support.nginx").wait_for(function()
    local v = fn()
    if not v and step then
      step()
    end
    return v
  end, timeout)
end

return M
