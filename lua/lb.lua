-- lb: load balancing for LuaJIT and OpenResty, with a C core.
--
--   local lb = require("lb")
--   local b = assert(lb.new({ backends = { "127.0.0.1:8081", "[::1]:8082" },
--                             selection = "consistent" }))
--   local backend = b:select(key)
--
-- The select path (select, select_with's walk, ready) is FFI calls into
-- the C core only, so it JIT-compiles.  Everything that calls Lua
-- (discovery, custom checks, on_health_change) runs on the Lua thread.

local ffi = require("ffi")
local core = require("lb.cdef")
local backend = require("lb.backend")
local discovery = require("lb.discovery")
local health = require("lb.health")

local C = core.C
local ffi_new, ffi_gc, ffi_string, ffi_cast = ffi.new, ffi.gc, ffi.string,
                                               ffi.cast
local iter_head_ptr = ffi.typeof("const lb_iter_head *")
local type, pairs, ipairs, tostring, tonumber, error, pcall, setmetatable =
  type, pairs, ipairs, tostring, tonumber, error, pcall, setmetatable
local floor = math.floor

local lb = {
  _VERSION = "0.1.0",
  discovery = discovery,
  health = health,
  DEFAULT_MAX_ITERATIONS = core.DEFAULT_MAX_ITERATIONS,
}

local Balancer = {}
Balancer.__index = Balancer
lb.Balancer = Balancer

local errbuf = ffi_new("const char *[1]")
local hinfo = ffi_new("lb_health_info")

local OPTIONS = {
  backends = true, discovery = true, selection = true, point_multiple = true,
  health_check = true, health_check_frequency = true, update_frequency = true,
  parallel_health_check = true, on_health_change = true,
  start_unhealthy = true, max_iterations = true,
}

local bad_arg = backend.bad_arg

local function check_self(self, fname)
  if getmetatable(self) ~= Balancer then
    error("bad argument #1 to '" .. fname .. "' (balancer expected, got "
          .. type(self) .. "; use balancer:" .. fname .. "(...))", 3)
  end
end

-- An iterator and its head (gen, ready), read through a pointer cast
-- once here: lb_iter is opaque, its head is the part Lua reads.
local function new_iter()
  local it = C.lb_iter_new()
  if it == nil then
    error("lb: out of memory", 3)
  end
  return ffi_gc(it, C.lb_iter_free), ffi_cast(iter_head_ptr, it)
end

local function optional_frequency(v, name)
  if v == nil then
    return true
  end
  if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
    return nil, name .. " must be a positive number of seconds or nil, got "
                .. tostring(v)
  end
  return true
end

-- The one rule for a max_iterations option (lb.new, lb.nginx.new): nil or
-- an integer from 1 to 2^31.  Returns the error text, or nil when valid.
function lb._max_iterations_error(mi)
  if mi ~= nil and (type(mi) ~= "number" or mi ~= floor(mi) or mi < 1
                    or mi > 2^31) then
    return "max_iterations must be an integer between 1 and 2^31, got "
           .. tostring(mi)
  end
end

-- Validate lb.new's options; returns nil, err or true.
local function check_options(opts)
  for k in pairs(opts) do
    if not OPTIONS[k] then
      return nil, "unknown option '" .. tostring(k) .. "'"
    end
  end
  if opts.backends ~= nil and opts.discovery ~= nil then
    return nil, "give either backends or discovery, not both"
  end
  local sel = opts.selection
  if sel ~= nil and (type(sel) ~= "string" or not core.SELECTION[sel]) then
    return nil, "selection must be one of 'round_robin', 'random', 'fnv', "
                .. "'consistent', got " .. tostring(sel)
  end
  local pm = opts.point_multiple
  if pm ~= nil and (type(pm) ~= "number" or pm ~= floor(pm) or pm < 1
                    or pm > core.MAX_POINT_MULTIPLE) then
    return nil, "point_multiple must be an integer between 1 and "
                .. core.MAX_POINT_MULTIPLE .. ", got " .. tostring(pm)
  end
  local mi_err = lb._max_iterations_error(opts.max_iterations)
  if mi_err then
    return nil, mi_err
  end
  local d = opts.discovery
  if d ~= nil and type(d) ~= "function" and not discovery.is_discovery(d) then
    return nil, "discovery must be a function or lb.discovery.static{...}, "
                .. "got " .. type(d)
  end
  local ok, err = optional_frequency(opts.health_check_frequency,
                                     "health_check_frequency")
  if not ok then
    return nil, err
  end
  ok, err = optional_frequency(opts.update_frequency, "update_frequency")
  if not ok then
    return nil, err
  end
  for _, k in ipairs({ "parallel_health_check", "start_unhealthy" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      return nil, k .. " must be a boolean, got " .. type(opts[k])
    end
  end
  if opts.on_health_change ~= nil
     and type(opts.on_health_change) ~= "function" then
    return nil, "on_health_change must be a function, got "
                .. type(opts.on_health_change)
  end
  return true
end

-- Decode an enablement table { [addr] = bool } into canonical addr -> bool.
local function decode_enablement(en)
  if en == nil then
    return nil
  end
  if type(en) ~= "table" then
    return nil, "enablement must be a table { [addr] = boolean }, got "
                .. type(en)
  end
  local out = {}
  for k, v in pairs(en) do
    if type(k) ~= "string" then
      return nil, "enablement: keys must be address strings, got " .. type(k)
    end
    if type(v) ~= "boolean" then
      return nil, "enablement['" .. k .. "'] must be a boolean, got "
                  .. type(v)
    end
    out[backend.canonical(k)] = v
  end
  return out
end

-- Publish `list` (decoded backend tables) with `en` (canonical addr ->
-- bool).  Keeps the tables of backends that stay.  Returns true or nil, err
-- (the previous set stays).
function Balancer:_apply(list, en)
  local n = #list
  local arr = ffi_new("lb_backend[?]", n > 0 and n or 1)
  local order = ffi_new("uint32_t[?]", n > 0 and n or 1)
  local count = ffi_new("size_t[1]")
  for i = 1, n do
    local b = list[i]
    local ok, err = backend.fill(arr, i - 1, b, en and en[b.addr])
    if not ok then
      return nil, "backend '" .. tostring(b.addr) .. "': " .. err
    end
  end
  local rc = C.lb_balancer_update(self._c, arr, n, order, count, errbuf)
  if rc < 0 then
    return nil, ffi_string(errbuf[0])
  end
  local m = tonumber(count[0])
  local old = self._byident
  if rc == 0 and tonumber(C.lb_balancer_generation(self._c)) == self._gen then
    -- Same set: refresh ext on the tables we already hand out.
    for i = 0, m - 1 do
      local b = list[order[i] + 1]
      local kept = old[backend.identity(b.addr, b.weight)]
      if kept then
        kept.ext = b.ext
      end
    end
    return true
  end
  local newlist, byident, index, byid = {}, {}, {}, {}
  for i = 0, m - 1 do
    local b = list[order[i] + 1]
    local ident = backend.identity(b.addr, b.weight)
    local t = old[ident]
    if t then
      t.ext = b.ext
    else
      t = b
    end
    newlist[i + 1] = t
    byident[ident] = t
    index[t] = i
    C.lb_balancer_health(self._c, i, hinfo)
    byid[tonumber(hinfo.id)] = t
  end
  self._list, self._byident, self._index, self._byid =
    newlist, byident, index, byid
  for id in pairs(self._last_error) do
    if byid[id] == nil then
      self._last_error[id] = nil
    end
  end
  self._gen = tonumber(C.lb_balancer_generation(self._c))
  return true
end

-- Re-read the published set when it was published outside this object
-- (not the case in normal use: only this object updates its balancer).
function Balancer:_sync()
  local n = tonumber(C.lb_balancer_count(self._c))
  local cb = ffi_new("lb_backend")
  local list = {}
  for i = 0, n - 1 do
    if C.lb_balancer_backend(self._c, i, cb) == 0 then
      local t = backend.from_c(cb)
      local kept = self._byident[backend.identity(t.addr, t.weight)]
      list[#list + 1] = kept or t
    end
  end
  return self:_apply(list, nil)
end

function lb.new(opts)
  if type(opts) ~= "table" then
    return nil, "lb.new: options must be a table, got " .. type(opts)
  end
  local ok, err = check_options(opts)
  if not ok then
    return nil, "lb.new: " .. err
  end
  local check
  if opts.health_check ~= nil then
    check, err = health.validate(opts.health_check)
    if not check then
      return nil, "lb.new: health_check: " .. err
    end
  end

  local static_list
  if opts.backends ~= nil then
    static_list, err = backend.decode_list(opts.backends, "backends", true)
    if not static_list then
      return nil, "lb.new: " .. err
    end
  end

  local cfg = ffi_new("lb_config")
  cfg.selection = core.SELECTION[opts.selection or "round_robin"]
  cfg.point_multiple = opts.point_multiple or 160
  cfg.start_unhealthy = opts.start_unhealthy and 1 or 0
  local c = C.lb_balancer_new(cfg, errbuf)
  if c == nil then
    return nil, "lb.new: " .. ffi_string(errbuf[0])
  end
  c = ffi_gc(c, C.lb_balancer_free)
  local it, ith = new_iter()

  local self = setmetatable({
    _c = c,
    _pool = {},
    _poolh = {},
    _npool = 0,
    _list = {},
    _byident = {},
    _index = {},
    _byid = {},
    _gen = tonumber(C.lb_balancer_generation(c)),
    _maxit = opts.max_iterations or core.DEFAULT_MAX_ITERATIONS,
    _discovery = opts.discovery,
    _check = check,
    _last_error = {},
    selection = opts.selection or "round_robin",
    _keyless = opts.selection == nil or opts.selection == "round_robin"
               or opts.selection == "random",
    health_check_frequency = opts.health_check_frequency,
    update_frequency = opts.update_frequency,
    parallel_health_check = opts.parallel_health_check == true,
    on_health_change = opts.on_health_change,
  }, Balancer)
  self._it, self._ith = it, ith

  if static_list then
    ok, err = self:_apply(static_list, nil)
    if not ok then
      return nil, "lb.new: backends: " .. err
    end
  elseif type(self._discovery) == "table" and self._discovery.is_static then
    ok, err = self:update()
    if not ok then
      return nil, "lb.new: " .. err
    end
  end
  if check and check.kind ~= "custom" then
    ok, err = self:_setup_builtin_check(check)
    if not ok then
      return nil, "lb.new: health_check: " .. err
    end
  end
  return self
end

-- Run discovery now.  true, or nil, err (the previous set stays).
function Balancer:update()
  check_self(self, "update")
  local d = self._discovery
  if d == nil then
    return true -- a static `backends` list: nothing to rediscover
  end
  local ok, list, en
  if type(d) == "function" then
    ok, list, en = pcall(d)
  else
    ok, list, en = pcall(d.discover, d)
  end
  if not ok then
    return nil, "discovery failed: " .. tostring(list)
  end
  if list == nil then
    if en ~= nil then
      return nil, "discovery failed: " .. tostring(en)
    end
    return nil, "discovery returned nil (expected a list of backends)"
  end
  local decoded, err = backend.decode_list(list, "discovery result", true)
  if not decoded then
    return nil, err
  end
  local enablement
  enablement, err = decode_enablement(en)
  if err then
    return nil, "discovery result: " .. err
  end
  return self:_apply(decoded, enablement)
end

-- The key: a string; nil only where the algorithm ignores it.
local function key_arg(self, key, fname)
  if type(key) ~= "string" then
    if key == nil and self._keyless then
      return ""
    end
    bad_arg(1, fname, "string", key)
  end
  return key
end

local function max_arg(n, maxit, fname, default)
  if maxit == nil then
    return default
  end
  if type(maxit) ~= "number" or maxit < 0 or maxit ~= floor(maxit) then
    bad_arg(n, fname, "non-negative integer", maxit)
  end
  if maxit > 4294967295 then
    return 4294967295
  end
  return maxit
end

-- The select path proper: key as pointer (a Lua string, or C memory) and
-- length.  Compiles to one FFI call, a generation check and a table load.
local function select_raw(self, key, len, max_iterations)
  local it, ith = self._it, self._ith
  local idx = C.lb_balancer_select(self._c, key, len, max_iterations, it)
  if idx < 0 then
    return nil
  end
  if tonumber(ith.gen) ~= self._gen then
    -- Published by someone else since we last looked: realign, retry.
    self:_sync()
    idx = C.lb_balancer_select(self._c, key, len, max_iterations, it)
    if idx < 0 or tonumber(ith.gen) ~= self._gen then
      return nil
    end
  end
  return self._list[idx + 1]
end

-- The first ready backend for `key` in the algorithm's order, or nil.
function Balancer:select(key, max_iterations)
  key = key_arg(self, key, "select")
  max_iterations = max_arg(2, max_iterations, "select", self._maxit)
  return select_raw(self, key, #key, max_iterations)
end

-- select() with the key already in C memory (ptr, len): lb.nginx passes
-- nginx's own variable buffer without making (and interning) a Lua string.
-- `ptr` must stay valid for the call.
function Balancer:_select_cstr(ptr, len, max_iterations)
  return select_raw(self, ptr, len, max_iterations or self._maxit)
end

-- Walk the unique candidates for `key`, calling accept(backend, healthy)
-- until it returns true; that backend, or nil.  An error in accept
-- propagates; the balancer stays usable.
function Balancer:select_with(key, max_iterations, accept)
  key = key_arg(self, key, "select_with")
  max_iterations = max_arg(2, max_iterations, "select_with", self._maxit)
  if type(accept) ~= "function" then
    bad_arg(3, "select_with", "function", accept)
  end
  -- One iterator per nesting level: accept may call select_with again.
  -- If accept raises, the iterator is simply not returned to the pool.
  local it, ith
  local np = self._npool
  if np > 0 then
    it, ith = self._pool[np], self._poolh[np]
    self._pool[np], self._poolh[np] = nil, nil
    self._npool = np - 1
  else
    it, ith = new_iter()
  end
  local c = self._c
  local idx = C.lb_iter_first(c, key, #key, max_iterations, it)
  if idx >= 0 and tonumber(ith.gen) ~= self._gen then
    self:_sync()
    idx = -1
  end
  local list = self._list
  local found
  while idx >= 0 do
    local b = list[idx + 1]
    if accept(b, ith.ready ~= 0) then
      found = b
      break
    end
    idx = C.lb_iter_next(c, it)
  end
  np = self._npool + 1
  self._pool[np], self._poolh[np] = it, ith
  self._npool = np
  return found
end

-- Index of a backend given as one of our tables, an address string, or a
-- table { addr, weight }.
function Balancer:_find(b, fname)
  local i = self._index[b]
  if i then
    return i
  end
  local t = type(b)
  if t == "string" then
    local addr = backend.canonical(b)
    for j, e in ipairs(self._list) do
      if e.addr == addr then
        return j - 1
      end
    end
    return nil
  elseif t == "table" then
    if type(b.addr) ~= "string" then
      bad_arg(1, fname, "backend", b)
    end
    local e = self._byident[backend.identity(backend.canonical(b.addr),
                                             b.weight or 1)]
    return e and self._index[e]
  end
  bad_arg(1, fname, "backend", b)
end

-- Whether a backend is ready (healthy and enabled); false for a backend
-- that is not in the set.
function Balancer:ready(b)
  local i = self:_find(b, "ready")
  if not i then
    return false
  end
  return C.lb_balancer_ready(self._c, self._gen, i) == 1
end

-- Enable or disable a backend (its health is untouched).  Returns true,
-- or false when the backend is not in the set.
function Balancer:set_enable(b, enable)
  if type(enable) ~= "boolean" then
    bad_arg(2, "set_enable", "boolean", enable)
  end
  local i = self:_find(b, "set_enable")
  if not i then
    return false
  end
  return C.lb_balancer_set_enable(self._c, self._gen, i, enable and 1 or 0)
         == 0
end

-- The backends, in sorted order (IPv4 < IPv6 < unix; address, port,
-- weight).  A new array of the balancer's own backend tables.
function Balancer:backends()
  local out = {}
  for i, b in ipairs(self._list) do
    out[i] = b
  end
  return out
end

function Balancer:_error_text(id, kind, detail)
  local custom = self._last_error[id]
  if custom then
    return custom
  end
  if kind == 0 then
    return nil
  end
  return self:_builtin_error_text(kind, detail)
end

-- One row per backend in sorted order:
-- { addr, weight, healthy, enabled, ready, last_error }.
function Balancer:status()
  local rows = {}
  for i, b in ipairs(self._list) do
    if C.lb_balancer_health(self._c, i - 1, hinfo) == 0 then
      local healthy, enabled = hinfo.healthy ~= 0, hinfo.enabled ~= 0
      rows[i] = {
        addr = b.addr,
        weight = b.weight,
        healthy = healthy,
        enabled = enabled,
        ready = healthy and enabled,
        last_error = self:_error_text(tonumber(hinfo.id),
                                      tonumber(hinfo.err_kind),
                                      tonumber(hinfo.err_detail)),
      }
    end
  end
  return rows
end

require("lb.checks")(lb, Balancer, check_self)

return lb
