-- Backends as Lua sees them, and their decoding from user input.
--
-- A backend table: { addr = "1.2.3.4:80" | "[::1]:80" | "unix:/p",
--   host = "1.2.3.4" | "::1" | "/p", port = 80 | nil, weight = 1.., ext = any }
-- Identity is (addr, weight), as in Pingora; `ext` is carried, not compared.
--
-- Decoding never raises: every problem comes back as nil, err naming the
-- entry ("backends[3] ('10.0.0.1'): missing port (expected host:port)").

local ffi = require("ffi")
local core = require("lb.cdef")
local args = require("lb.args")

local C = core.C
local ffi_string = ffi.string
local type, tostring, floor = type, tostring, math.floor

local M = {}

local errbuf = ffi.new("const char *[1]")
local RESOLVE_MAX = 64
local resolved = ffi.new("lb_backend[?]", RESOLVE_MAX)

local describe = args.shown

-- Seconds a host name's resolution may take.
M.RESOLVE_TIMEOUT = 5

-- OpenResty phases where ngx.sleep yields (the others cannot wait without
-- blocking the worker).
local YIELDS = { rewrite = true, access = true, content = true, timer = true,
                 ssl_cert = true, ssl_session_fetch = true,
                 ssl_client_hello = true, preread = true }

local function can_yield()
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
         and YIELDS[ngx.get_phase()] == true
end

-- Resolve "name:port" on the C thread (c-ares): in OpenResty, where the
-- phase can yield, the worker sleeps (serving other requests) until the
-- answer comes; in plain Lua the caller waits for it.  nil when the phase
-- can do neither (init_by_lua*, init_worker_by_lua*: the blocking
-- system resolver is used there, before any request is served).
local function resolve_async(addr, weight)
  local yields = can_yield()
  if type(ngx) == "table" and not yields then
    return nil
  end
  local r = C.lb_resolve_start(addr, #addr, weight, M.RESOLVE_TIMEOUT, errbuf)
  if r == nil then
    return false, ffi_string(errbuf[0])
  end
  r = ffi.gc(r, C.lb_resolve_free)
  local n
  if yields then
    local wait, waited = 0.001, 0
    while true do
      n = C.lb_resolve_result(r, resolved, RESOLVE_MAX, errbuf)
      if n ~= core.DECLINED or waited > M.RESOLVE_TIMEOUT + 1 then
        break
      end
      ngx.sleep(wait)
      waited = waited + wait
      wait = wait < 0.016 and wait * 2 or wait
    end
  else
    C.lb_resolve_wait(r, M.RESOLVE_TIMEOUT + 1)
    n = C.lb_resolve_result(r, resolved, RESOLVE_MAX, errbuf)
  end
  local buf = resolved
  if n > RESOLVE_MAX then
    buf = ffi.new("lb_backend[?]", n)
    n = C.lb_resolve_result(r, buf, n, errbuf)
  end
  local out
  if n == core.DECLINED then
    out = { err = "no answer within " .. M.RESOLVE_TIMEOUT .. " s" }
  elseif n < 0 then
    out = { err = ffi_string(errbuf[0]) }
  else
    out = {}
    for i = 0, n - 1 do
      out[i + 1] = ffi.new("lb_backend", buf[i])
    end
  end
  C.lb_resolve_free(ffi.gc(r, nil))
  return out
end

function M.identity(addr, weight)
  return addr .. "#" .. weight
end

-- Validate a weight: an integer in [1, MAX_WEIGHT].
function M.check_weight(w)
  if w == nil then
    return 1
  end
  if type(w) ~= "number" then
    return nil, "weight must be a number, got " .. type(w)
  end
  if w ~= w or w ~= floor(w) then
    return nil, "weight must be an integer, got " .. tostring(w)
  end
  if w < 1 or w > core.MAX_WEIGHT then
    return nil, "weight must be between 1 and " .. core.MAX_WEIGHT
                .. ", got " .. tostring(w)
  end
  return w
end

local function to_table(cb, ext)
  local family = cb.family
  return {
    addr = ffi_string(cb.addr, cb.addr_len),
    host = ffi_string(cb.host, cb.host_len),
    port = family ~= core.AF_UNIX and cb.port or nil,
    weight = cb.weight,
    ext = ext,
  }
end
M.from_c = to_table

-- Decode one entry (a string or { addr, weight, ext }) into a list of
-- backend tables: a host name resolves to every one of its addresses.
-- `resolve` false accepts only literal addresses.
function M.decode(entry, resolve)
  local addr, weight, ext
  local t = type(entry)
  if t == "string" then
    addr, weight = entry, 1
  elseif t == "table" then
    addr, ext = entry.addr, entry.ext
    if type(addr) ~= "string" then
      return nil, "addr must be a string, got " .. type(addr)
    end
    local w, err = M.check_weight(entry.weight)
    if not w then
      return nil, err
    end
    weight = w
  else
    return nil, "expected an address string or a backend table, got " .. t
  end

  local out = {}
  if resolve and C.lb_backend_parse(addr, #addr, weight, resolved,
                                    errbuf) ~= 0
     and #addr <= 260 and addr:sub(1, 5) ~= "unix:"
     and addr:find("^[%w%.%-_]+:%d+$") and addr:find("%a") then
    -- a host name: resolved without blocking where the host allows
    local list, err = resolve_async(addr, weight)
    if list == false then
      return nil, err
    end
    if list then
      if list.err then
        return nil, list.err
      end
      for i = 1, #list do
        out[i] = to_table(list[i], ext)
      end
      return out
    end
  end
  if resolve then
    local buf, room = resolved, RESOLVE_MAX
    local n = C.lb_backend_resolve(addr, #addr, weight, buf, room, errbuf)
    if n > room then
      -- more addresses than the static buffer holds: ask again with room
      buf, room = ffi.new("lb_backend[?]", n), n
      n = C.lb_backend_resolve(addr, #addr, weight, buf, room, errbuf)
    end
    if n < 0 then
      return nil, ffi_string(errbuf[0])
    end
    for i = 0, (n < room and n or room) - 1 do
      out[i + 1] = to_table(buf[i], ext)
    end
  else
    if C.lb_backend_parse(addr, #addr, weight, resolved, errbuf) ~= 0 then
      return nil, ffi_string(errbuf[0])
    end
    out[1] = to_table(resolved[0], ext)
  end
  return out
end

-- Decode a list of entries.  `what` names the list in errors.
function M.decode_list(list, what, resolve)
  if type(list) ~= "table" then
    return nil, what .. ": expected a list of backends, got " .. describe(list)
  end
  local out, n = {}, 0
  local count = #list
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k > count or k ~= floor(k) then
      return nil, what .. ": expected a list (array) of backends, found key "
                  .. describe(k)
    end
  end
  for i = 1, count do
    local entry = list[i]
    local bs, err = M.decode(entry, resolve)
    if not bs then
      local shown = type(entry) == "table" and entry.addr or entry
      if type(shown) == "string" then
        return nil, what .. "[" .. i .. "] (" .. describe(shown) .. "): "
                    .. err
      end
      return nil, what .. "[" .. i .. "]: " .. err
    end
    for j = 1, #bs do
      n = n + 1
      out[n] = bs[j]
    end
  end
  return out
end

-- The canonical text of an address, or the text itself when it is not one
-- (enablement keys may name backends that are not in the set).
function M.canonical(addr)
  if C.lb_backend_parse(addr, #addr, 1, resolved, errbuf) == 0 then
    return ffi_string(resolved[0].addr, resolved[0].addr_len)
  end
  return addr
end

-- Fill the C array used by lb_balancer_update.
function M.fill(carr, i, b, enable)
  local addr = b.addr
  if C.lb_backend_parse(addr, #addr, b.weight, carr + i, errbuf) ~= 0 then
    return nil, ffi_string(errbuf[0])
  end
  carr[i].enable = enable == nil and -1 or (enable and 1 or 0)
  return true
end

return M
