-- Ports and temporary directories for everything the tests, the demo, the
-- examples and the benchmarks start, so that two runs on one machine never
-- collide.
--
--   LB_PORT_BASE   first port of this run's range; unset: ports chosen by
--                  the kernel (bind port 0), as before
--   LB_PORT_COUNT  size of the range (default 1000): ports come from
--                  [LB_PORT_BASE, LB_PORT_BASE + LB_PORT_COUNT)
--   LB_TMPDIR      where temporary directories go (default $TMPDIR, else
--                  /tmp)
--
-- A port is probed free (bound, then closed) before it is handed out, and
-- never handed out twice by one process.  Another process of the same run
-- must get its own part of the range: a caller hands it a block
-- (ports.block(n)) and passes LB_PORT_BASE/LB_PORT_COUNT for that block.
--
--   local ports = require("support.ports")
--   local p = assert(ports.free())            -- 127.0.0.1
--   local base = assert(ports.block(4))       -- base .. base + 3, all free

local socket = require("socket")

local M = {}

local handed = {} -- port -> true, everything free() and block() returned

-- The range from the environment: base, count; nil when LB_PORT_BASE is
-- unset.  A malformed value raises, naming the variable.
local function range()
  local b = os.getenv("LB_PORT_BASE")
  if b == nil or b == "" then
    return nil
  end
  local base = tonumber(b)
  if not base or base % 1 ~= 0 or base < 1 or base > 65535 then
    error("LB_PORT_BASE must be a port number (1..65535), got '" .. b .. "'", 0)
  end
  local c = os.getenv("LB_PORT_COUNT")
  local count = 1000
  if c ~= nil and c ~= "" then
    count = tonumber(c)
    if not count or count % 1 ~= 0 or count < 1 then
      error("LB_PORT_COUNT must be a positive integer, got '" .. c .. "'", 0)
    end
  end
  if base + count - 1 > 65535 then
    error(("LB_PORT_BASE + LB_PORT_COUNT - 1 is %d, past port 65535")
          :format(base + count - 1), 0)
  end
  return base, count
end
M.range = range

-- Can a listener bind host:port now?  (LuaSocket sets SO_REUSEADDR, so a
-- port in TIME_WAIT counts as free, as it is for nginx.)
local function probe(host, port)
  local s = socket.bind(host, port)
  if not s then
    return false
  end
  s:close()
  return true
end
M.probe = probe

local cursor = 0 -- next offset into the range to try

-- A port that was free a moment ago on host (default 127.0.0.1), not
-- handed out before by this process.  Returns the port, or nil, err.
function M.free(host)
  host = host or "127.0.0.1"
  local base, count = range()
  if base then
    for _ = 1, count do
      local p = base + cursor
      cursor = (cursor + 1) % count
      if not handed[p] and probe(host, p) then
        handed[p] = true
        return p
      end
    end
    return nil, ("no free port left in LB_PORT_BASE..+LB_PORT_COUNT (%d..%d)")
      :format(base, base + count - 1)
  end
  for _ = 1, 50 do
    local s, err = socket.bind(host, 0)
    if not s then
      return nil, err
    end
    local _, port = s:getsockname()
    s:close()
    port = tonumber(port)
    if not handed[port] then
      handed[port] = true
      return port
    end
  end
  return nil, "no free port"
end

-- n consecutive ports, all free on host and none handed out before, for a
-- process that takes a range of its own (LB_PORT_BASE=b LB_PORT_COUNT=n).
-- Returns the first, or nil, err.
function M.block(n, host)
  host = host or "127.0.0.1"
  local function take(first)
    if first + n - 1 > 65535 then
      return false
    end
    for p = first, first + n - 1 do
      if handed[p] or not probe(host, p) then
        return false
      end
    end
    for p = first, first + n - 1 do
      handed[p] = true
    end
    return true
  end
  local base, count = range()
  if base then
    for first = base, base + count - n do
      if take(first) then
        return first
      end
    end
    return nil, ("no %d consecutive free ports in %d..%d"):format(
      n, base, base + count - 1)
  end
  -- No range: the kernel hands out single ports from its ephemeral range,
  -- where the neighbours of one are often taken by connections (TIME_WAIT
  -- of the other parity), so a block is drawn below that range instead.
  local low = 32768
  local f = io.open("/proc/sys/net/ipv4/ip_local_port_range")
  if f then
    low = tonumber((f:read("*l") or ""):match("^%s*(%d+)")) or low
    f:close()
  end
  local from = math.max(1024, low - 12000)
  if low - n < from then
    return nil, "no room for " .. n .. " ports below the ephemeral range"
  end
  local seed = math.floor(socket.gettime() * 1e6) % 2147483646 + 1
  for _ = 1, 200 do
    seed = (seed * 16807) % 2147483647
    local first = from + seed % (low - n - from + 1)
    if take(first) then
      return first
    end
  end
  return nil, "no " .. n .. " consecutive free ports"
end

-- The directory temporary directories go in, without a trailing slash.
function M.tmpdir()
  local t = os.getenv("LB_TMPDIR")
  if t == nil or t == "" then
    t = os.getenv("TMPDIR")
  end
  if t == nil or t == "" then
    t = "/tmp"
  end
  return (t:gsub("(.)/+$", "%1"))
end

return M
