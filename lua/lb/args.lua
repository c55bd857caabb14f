-- Argument checking: lb.new's options, discovery sources, and the
-- errors a method raises for a wrong argument.
--
-- Lua checks names and types; every numeric limit comes from the C core
-- (lb.h, through lb.cdef's LIMITS), so the bounds an error names are the
-- ones C enforces.  Configuration is data: these functions return the
-- normalized value or nil, err naming the option; only the method-argument
-- checks (bad_arg, check_self) raise, at the caller's level.

local core = require("lb.cdef")

local type, pairs, ipairs, tostring, error, getmetatable, floor =
  type, pairs, ipairs, tostring, error, getmetatable, math.floor

local LIMITS = core.LIMITS

local M = {}

-- At most this much of a caller's value is quoted in an error: a 1 MB
-- bad address must not become a 1 MB message.
local SHOWN_MAX = 64

-- A value as an error message quotes it: strings quoted and cut at
-- SHOWN_MAX bytes, other values by type.
function M.shown(v)
  if type(v) == "string" then
    if #v > SHOWN_MAX then
      return "'" .. v:sub(1, SHOWN_MAX) .. "...' (" .. #v .. " bytes)"
    end
    return "'" .. v .. "'"
  end
  return type(v)
end

-- A message from elsewhere (a discovery's error), cut to a few hundred
-- bytes.
local CUT_MAX = 256
function M.cut(s)
  s = tostring(s)
  if #s > CUT_MAX then
    return s:sub(1, CUT_MAX) .. "... (" .. #s .. " bytes)"
  end
  return s
end

-- A value as an error about a string option quotes it: strings as shown,
-- numbers and booleans as written, other values by their type ("a
-- table", never its address).
local function text(v)
  local t = type(v)
  if t == "string" then
    return M.shown(v)
  end
  if t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  end
  return "a " .. t
end
M.text = text

-- A value as an error about a numeric option names it: a number as
-- written; a string as a string (`the string "1"`: a number in quotes is
-- not a number), cut as shown; anything else as text() says.
local function got(v)
  if type(v) == "string" then
    if #v > SHOWN_MAX then
      return 'the string "' .. v:sub(1, SHOWN_MAX) .. '..." (' .. #v
             .. " bytes)"
    end
    return 'the string "' .. v .. '"'
  end
  return text(v)
end
M.got = got

-- HTTP status codes (RFC 9110, section 15: three digits, 100 to 599), for
-- expected_status and passive.failure_status.  The error text or nil.
function M.status_error(s)
  if not (type(s) == "number" and s == floor(s) and s >= 100 and s <= 599)
  then
    return got(s) .. " is not an HTTP status code (100 to 599)"
  end
end

-- The error a method raises for an argument of the wrong type, as Lua's
-- own functions word it; reported at the method's caller.
function M.bad_arg(n, fname, expected, value)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. expected
        .. " expected, got " .. type(value) .. ")", 3)
end

-- A checker of `self` for the methods of objects with metatable `mt`:
-- check(self, fname) raises at the method's caller when self is not one,
-- as `b.select(key)` instead of `b:select(key)` would.
function M.self_checker(mt, what)
  return function(self, fname)
    if getmetatable(self) ~= mt then
      error("bad argument #1 to '" .. fname .. "' (" .. what
            .. " expected, got " .. type(self) .. "; use " .. what .. ":"
            .. fname .. "(...))", 3)
    end
  end
end

local function integer_in(v, lo, hi)
  return type(v) == "number" and v == floor(v) and v >= lo and v <= hi
end
M.integer_in = integer_in

-- A period in seconds (health_check_frequency, update_frequency): nil
-- (once) or a number from the core's minimum to its maximum.
local function frequency(v, name)
  if v == nil then
    return true
  end
  if type(v) ~= "number" or v ~= v or v < LIMITS.min_frequency
     or v > LIMITS.max_frequency then
    return nil, name .. " must be a number of seconds from "
                .. LIMITS.min_frequency .. " to "
                .. ("%d"):format(LIMITS.max_frequency) .. " or nil, got "
                .. got(v)
  end
  return true
end

-- The one rule for a max_iterations option (lb.new, lb.nginx.new): nil or
-- an integer from 1 to 2^31.  Returns the error text, or nil when valid.
function M.max_iterations_error(mi)
  if mi ~= nil and not integer_in(mi, 1, 2^31) then
    return "max_iterations must be an integer between 1 and 2^31, got "
           .. got(mi)
  end
end

local OPTIONS = {
  backends = true, discovery = true, selection = true, point_multiple = true,
  health_check = true, health_check_frequency = true, update_frequency = true,
  parallel_health_check = true, on_health_change = true,
  start_unhealthy = true, max_iterations = true, shared = true,
  passive = true, panic_threshold = true, slow_start = true,
  choice_count = true, active_request_bias = true, ewma_decay = true,
  table_size = true, hash_balance_factor = true, name = true,
}

-- ---- passive health, panic, slow start ----

local PASSIVE_DEFAULTS = {
  consecutive_failures = 5, ejection_time = 30, max_ejection_time = 300,
  max_ejection_percent = 50,
}
local PASSIVE_KEYS = { failure_status = true }
for k in pairs(PASSIVE_DEFAULTS) do
  PASSIVE_KEYS[k] = true
end
M.DEFAULT_FAILURE_STATUS = { 500, 502, 503, 504 }

local function seconds_in(v, name, lo_open, hi)
  if type(v) ~= "number" or v ~= v or v <= lo_open or v > hi then
    return nil, name .. " must be a number of seconds above " .. lo_open
                .. " and at most " .. ("%d"):format(hi) .. ", got " .. got(v)
  end
  return v
end

-- Check and normalise the `passive` option (nil, true for the defaults, or
-- a table): { consecutive_failures, failure_status (a set: status -> true),
-- ejection_time, max_ejection_time, max_ejection_percent }, or nil, err.
function M.passive(p)
  if p == nil or p == false then
    return false
  end
  if p == true then
    p = {}
  end
  if type(p) ~= "table" then
    return nil, "passive must be a table, got " .. type(p)
  end
  for k in pairs(p) do
    if not PASSIVE_KEYS[k] then
      return nil, "passive: unknown option " .. M.shown(tostring(k))
    end
  end
  local out = {}
  local cf = p.consecutive_failures
  if cf == nil then
    cf = PASSIVE_DEFAULTS.consecutive_failures
  elseif not integer_in(cf, 0, LIMITS.max_threshold) then
    return nil, "passive.consecutive_failures must be an integer from 0 "
                .. "(off) to " .. LIMITS.max_threshold .. ", got " .. got(cf)
  end
  out.consecutive_failures = cf
  local err
  out.ejection_time, err = seconds_in(
    p.ejection_time or PASSIVE_DEFAULTS.ejection_time,
    "passive.ejection_time", 0, LIMITS.max_ejection_time)
  if not out.ejection_time then
    return nil, err
  end
  local mt = p.max_ejection_time
  if mt == nil then
    mt = math.max(PASSIVE_DEFAULTS.max_ejection_time, out.ejection_time)
  end
  if type(mt) ~= "number" or mt ~= mt or mt < out.ejection_time
     or mt > LIMITS.max_ejection_time then
    return nil, "passive.max_ejection_time must be a number of seconds from "
                .. "ejection_time (" .. out.ejection_time .. ") to "
                .. ("%d"):format(LIMITS.max_ejection_time) .. ", got "
                .. got(mt)
  end
  out.max_ejection_time = mt
  local pct = p.max_ejection_percent
  if pct == nil then
    pct = PASSIVE_DEFAULTS.max_ejection_percent
  elseif not integer_in(pct, 0, 100) then
    return nil, "passive.max_ejection_percent must be an integer from 0 to "
                .. "100, got " .. got(pct)
  end
  out.max_ejection_percent = pct
  local fs = p.failure_status
  if fs == nil then
    fs = M.DEFAULT_FAILURE_STATUS
  elseif type(fs) == "number" then
    fs = { fs }
  elseif type(fs) ~= "table" then
    return nil, "passive.failure_status must be a status code or a list of "
                .. "them, got " .. type(fs)
  end
  out.failure_status = {}
  for i, s in ipairs(fs) do
    local serr = M.status_error(s)
    if serr then
      return nil, "passive.failure_status[" .. i .. "]: " .. serr
    end
    out.failure_status[s] = true
  end
  return out
end

-- panic_threshold: nil (off) or a fraction from 0 to 1.
function M.panic_threshold(v)
  if v == nil then
    return 0
  end
  if type(v) ~= "number" or v ~= v or v < 0 or v > 1 then
    return nil, "panic_threshold must be a number from 0 to 1 or nil, got "
                .. got(v)
  end
  return v
end

local SLOW_DEFAULTS = { window = 30, aggression = 1, min_weight = 0.1 }

-- slow_start: nil (off), true (the defaults) or { window, aggression,
-- min_weight }; returns the normalised table, false, or nil, err.
function M.slow_start(v)
  if v == nil or v == false then
    return false
  end
  if v == true then
    v = {}
  end
  if type(v) ~= "table" then
    return nil, "slow_start must be a table, got " .. type(v)
  end
  for k in pairs(v) do
    if SLOW_DEFAULTS[k] == nil then
      return nil, "slow_start: unknown option " .. M.shown(tostring(k))
    end
  end
  local out, err = {}
  out.window, err = seconds_in(v.window or SLOW_DEFAULTS.window,
                               "slow_start.window", 0,
                               LIMITS.max_slow_start_window)
  if not out.window then
    return nil, err
  end
  local a = v.aggression or SLOW_DEFAULTS.aggression
  if type(a) ~= "number" or a ~= a or a <= 0 or a > 100 then
    return nil, "slow_start.aggression must be a number above 0 and at most "
                .. "100, got " .. got(a)
  end
  out.aggression = a
  local mw = v.min_weight or SLOW_DEFAULTS.min_weight
  if type(mw) ~= "number" or mw ~= mw or mw <= 0 or mw > 1 then
    return nil, "slow_start.min_weight must be a number above 0 and at most "
                .. "1, got " .. got(mw)
  end
  out.min_weight = mw
  return out

end

-- The selection options: the registry flag that says an algorithm takes
-- it (lb.cdef's SELECTION[name].takes), and its check.  Returns nil or
-- the error text.
local function number_in(v, lo, hi)
  return type(v) == "number" and v == v and v >= lo and v <= hi
end

local function is_prime(n)
  if n < 2 then return false end
  local d = 2
  while d * d <= n do
    if n % d == 0 then return false end
    d = d + 1
  end
  return true
end

local SELECTION_OPTIONS = {
  { name = "choice_count", check = function(v)
      if not integer_in(v, 1, LIMITS.max_choice_count) then
        return "an integer from 1 to " .. LIMITS.max_choice_count
      end
    end },
  { name = "active_request_bias", check = function(v)
      if not number_in(v, 0, LIMITS.max_bias) then
        return "a number from 0 to " .. LIMITS.max_bias
      end
    end },
  { name = "ewma_decay", check = function(v)
      if not number_in(v, LIMITS.min_decay, LIMITS.max_decay) then
        return "a number of seconds from " .. LIMITS.min_decay .. " to "
               .. ("%d"):format(LIMITS.max_decay)
      end
    end },
  { name = "table_size", check = function(v)
      if not integer_in(v, 2, LIMITS.max_table_size) or not is_prime(v) then
        return "a prime from 2 to " .. LIMITS.max_table_size
               .. " (and at least the number of backends; default 65537)"
      end
    end },
  { name = "hash_balance_factor", check = function(v)
      if not number_in(v, 1, LIMITS.max_balance_factor) then
        return "a number from 1 to " .. LIMITS.max_balance_factor .. " or nil"
      end
    end },
}

local function selection_options(opts)
  local sel = opts.selection or "round_robin"
  local row = core.SELECTION[sel]
  for _, o in ipairs(SELECTION_OPTIONS) do
    local v = opts[o.name]
    if v ~= nil then
      if not row.takes[o.name] then
        local who = {}
        for _, name in ipairs(core.SELECTION_NAMES) do
          if core.SELECTION[name].takes[o.name] then who[#who + 1] = name end
        end
        return o.name .. " applies to selection '"
               .. table.concat(who, "' or '") .. "', not '" .. sel .. "'"
      end
      local want = o.check(v)
      if want then
        return o.name .. " must be " .. want .. ", got " .. got(v)
      end
    end
  end
end

-- Check lb.new's options (not backends, decoded by lb.backend, nor
-- health_check, see lb.health.check).  `is_discovery(v)` tells a discovery
-- object.  Returns true or nil, err.
-- `shared`: nil/false (private), true, or { capacity = N }.  The capacity
-- (nil: private), or nil, err.
local SHARED_KEYS = { capacity = true }

function M.shared_capacity(sh)
  if sh == nil or sh == false then
    return nil
  end
  if sh == true then
    return core.SHARED_CAPACITY
  end
  if type(sh) ~= "table" then
    return nil, "shared must be true or a table { capacity = N }, got "
                .. text(sh)
  end
  for k in pairs(sh) do
    if not SHARED_KEYS[k] then
      return nil, "shared: unknown option " .. M.shown(tostring(k))
    end
  end
  local cap = sh.capacity
  if cap == nil then
    return core.SHARED_CAPACITY
  end
  if not integer_in(cap, 1, core.SHARED_MAX_CAPACITY) then
    return nil, "shared.capacity must be an integer between 1 and "
                .. core.SHARED_MAX_CAPACITY .. ", got " .. got(cap)
  end
  return cap
end

function M.options(opts, is_discovery)
  for k in pairs(opts) do
    if not OPTIONS[k] then
      return nil, "unknown option " .. M.shown(tostring(k))
    end
  end
  local sel = opts.selection
  if sel ~= nil and (type(sel) ~= "string" or not core.SELECTION[sel]) then
    return nil, "selection must be one of '"
                .. table.concat(core.SELECTION_NAMES, "', '") .. "', got "
                .. text(sel)
  end
  local pm = opts.point_multiple
  if pm ~= nil and not integer_in(pm, 1, LIMITS.max_point_multiple) then
    return nil, "point_multiple must be an integer between 1 and "
                .. LIMITS.max_point_multiple .. ", got " .. got(pm)
  end
  local sel_err = selection_options(opts)
  if sel_err then
    return nil, sel_err
  end
  local mi_err = M.max_iterations_error(opts.max_iterations)
  if mi_err then
    return nil, mi_err
  end
  local d = opts.discovery
  if d ~= nil and type(d) ~= "function" and not is_discovery(d) then
    return nil, "discovery must be a function, lb.discovery.static{...}, "
                .. "lb.discovery.dns{...} or lb.discovery.etcd{...}, got "
                .. type(d)
  end
  for _, k in ipairs({ "health_check_frequency", "update_frequency" }) do
    local ok, err = frequency(opts[k], k)
    if not ok then
      return nil, err
    end
  end
  for _, k in ipairs({ "parallel_health_check", "start_unhealthy" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      return nil, k .. " must be a boolean, got " .. type(opts[k])
    end
  end
  local name = opts.name
  if name ~= nil and (type(name) ~= "string" or name == "" or #name > 128)
  then
    return nil, "name must be a non-empty string of at most 128 bytes "
                .. "(the balancer's name in logs and metrics), got "
                .. text(name)
  end
  local _, serr = M.shared_capacity(opts.shared)
  if serr then
    return nil, serr
  end
  if opts.on_health_change ~= nil
     and type(opts.on_health_change) ~= "function" then
    return nil, "on_health_change must be a function, got "
                .. type(opts.on_health_change)
  end
  return true
end

-- ---- discovery sources of the C core (lb.discovery.dns, .etcd) ----

local ETCD_TLS_KEYS = { verify = true, ca = true, sni = true }

local SOURCE_KNOWN = {
  dns = { name = true, type = true, port = true, resolvers = true,
          timeout = true, min_ttl = true, max_ttl = true },
  etcd = { endpoints = true, prefix = true, timeout = true, username = true,
           password = true, tls = true },
}

local function seconds(v, name, lo, hi)
  if v == nil then
    return true
  end
  if type(v) ~= "number" or v ~= v or v < lo or v > hi then
    return nil, name .. " must be a number of seconds between " .. lo
                .. " and " .. hi .. ", got " .. got(v)
  end
  return true
end

-- A resolver: "ip", "ip:port", "[ipv6]" or "[ipv6]:port".
local function resolver_ok(r)
  if type(r) ~= "string" then
    return false
  end
  local v6, port = r:match("^%[([%x:%.]+)%]:?(%d*)$")
  if v6 then
    return v6:find(":") ~= nil and (port == "" or tonumber(port) <= 65535)
  end
  if r:find("^[%x:]+$") and select(2, r:gsub(":", "")) >= 2 then
    return true -- bare IPv6
  end
  local a, b, c, d, p = r:match("^(%d+)%.(%d+)%.(%d+)%.(%d+):?(%d*)$")
  if not a then
    return false
  end
  for _, o in ipairs({ a, b, c, d }) do
    if tonumber(o) > 255 then
      return false
    end
  end
  return p == "" or (tonumber(p) >= 1 and tonumber(p) <= 65535)
end

-- Check a C source's options: a normalised table, or nil, err naming the
-- bad option ("dns: port must be ...").  update_frequency (the balancer's,
-- checked) caps a DNS source's interval: it asks again at least that often.
function M.discovery_source(kind, o, update_frequency)
  if o == nil then
    o = {}
  end
  if type(o) ~= "table" then
    return nil, kind .. ": options must be a table, got " .. type(o)
  end
  for k in pairs(o) do
    if not SOURCE_KNOWN[kind][k] then
      return nil, kind .. ": unknown option " .. M.shown(tostring(k))
    end
  end
  local ok, err = seconds(o.timeout, "timeout", 0.001, LIMITS.max_timeout)
  if not ok then
    return nil, kind .. ": " .. err
  end
  local out = { timeout = o.timeout or 2 }
  if kind == "dns" then
    if type(o.name) ~= "string" or o.name == "" or #o.name > 253 then
      return nil, "dns: name must be a non-empty host name, got "
                  .. text(o.name)
    end
    local t = o.type or "A"
    if t ~= "A" and t ~= "AAAA" and t ~= "SRV" then
      return nil, "dns: type must be 'A', 'AAAA' or 'SRV', got " .. text(t)
    end
    if t ~= "SRV" or o.port ~= nil then
      if not integer_in(o.port, 1, 65535) then
        return nil, "dns: port must be an integer between 1 and 65535"
                    .. (t ~= "SRV" and " (required for " .. t .. ")" or "")
                    .. ", got " .. got(o.port)
      end
    end
    for _, k in ipairs({ "min_ttl", "max_ttl" }) do
      ok, err = seconds(o[k], k, LIMITS.min_frequency, LIMITS.max_frequency)
      if not ok then
        return nil, "dns: " .. err
      end
    end
    if (o.max_ttl or 300) < (o.min_ttl or 1) then
      return nil, "dns: max_ttl (" .. text(o.max_ttl or 300)
                  .. ") is below min_ttl (" .. text(o.min_ttl or 1) .. ")"
    end
    local res = o.resolvers
    if res ~= nil then
      if type(res) ~= "table" or #res == 0 then
        return nil, "dns: resolvers must be a non-empty list of \"ip:port\" "
                    .. "strings, got " .. text(res)
      end
      for i, r in ipairs(res) do
        if not resolver_ok(r) then
          return nil, "dns: resolvers[" .. i .. "] must be \"ip\", "
                      .. "\"ip:port\" or \"[ipv6]:port\", got " .. text(r)
        end
      end
    end
    out.name, out.type, out.port = o.name, t, o.port or 0
    out.resolvers = res and table.concat(res, ",") or nil
    out.min_ttl, out.max_ttl = o.min_ttl or 1, o.max_ttl or 300
    local uf = update_frequency
    if uf ~= nil then
      if o.min_ttl ~= nil and o.min_ttl > uf then
        return nil, "dns: min_ttl (" .. text(o.min_ttl) .. ") is above "
                    .. "update_frequency (" .. text(uf) .. "): the source "
                    .. "would ask every " .. text(uf) .. " s and at most "
                    .. "every " .. text(o.min_ttl) .. " s"
      end
      out.max_ttl = math.min(out.max_ttl, uf)
      out.min_ttl = math.min(out.min_ttl, out.max_ttl)
    end
    return out
  end
  -- etcd
  local eps = o.endpoints
  if type(eps) == "string" then
    eps = { eps }
  end
  if type(eps) ~= "table" or #eps == 0 then
    return nil, "etcd: endpoints must be a non-empty list of http(s) URLs, "
                .. "got " .. text(o.endpoints)
  end
  for i, e in ipairs(eps) do
    if type(e) ~= "string" or not e:find("^https?://[^/%s,]+/?$") then
      return nil, "etcd: endpoints[" .. i .. "] must be an http:// or "
                  .. "https:// URL (scheme, host, port), got " .. text(e)
    end
  end
  if type(o.prefix) ~= "string" or o.prefix == "" then
    return nil, "etcd: prefix must be a non-empty string, got "
                .. text(o.prefix)
  end
  for _, k in ipairs({ "username", "password" }) do
    if o[k] ~= nil and (type(o[k]) ~= "string" or o[k] == "") then
      return nil, "etcd: " .. k .. " must be a non-empty string, got "
                  .. text(o[k])
    end
  end
  if (o.username == nil) ~= (o.password == nil) then
    return nil, "etcd: username and password go together"
  end
  local tls = o.tls
  if tls ~= nil and tls ~= true and tls ~= false and type(tls) ~= "table" then
    return nil, "etcd: tls must be a boolean or { verify, ca, sni }, got "
                .. text(tls)
  end
  if type(tls) == "table" then
    for k in pairs(tls) do
      if not ETCD_TLS_KEYS[k] then
        return nil, "etcd: tls: unknown option " .. M.shown(tostring(k))
      end
    end
    if tls.verify ~= nil and type(tls.verify) ~= "boolean" then
      return nil, "etcd: tls.verify must be a boolean, got " .. text(tls.verify)
    end
    if tls.ca ~= nil and type(tls.ca) ~= "string" then
      return nil, "etcd: tls.ca must be a file name, got " .. text(tls.ca)
    end
    if tls.sni ~= nil and (type(tls.sni) ~= "string"
                           or not tls.sni:match("^[%w%.%-]+$")) then
      return nil, "etcd: tls.sni must be a host name, got " .. text(tls.sni)
    end
  end
  out.endpoints = table.concat(eps, ",")
  out.prefix = o.prefix
  out.username, out.password = o.username, o.password
  out.tls_verify = not (type(tls) == "table" and tls.verify == false)
  out.tls_ca = type(tls) == "table" and tls.ca or nil
  out.tls_sni = type(tls) == "table" and tls.sni or nil
  return out
end

return M
