-- The Balancer: one object over one C balancer (lb.core).
--
--   select, select_with, ready      the select path: FFI calls only, so it
--   acquire                         JIT-compiles (acquire: one FFI call,
--                                   the pick counted in flight in C)
--   release, report                 outcomes of requests: in-flight counts,
--                                   passive health (ejection in C)
--   update, set_enable              the set (discovery) and enablement;
--                                   backends, status, panic, metrics are
--                                   lb.state's
--   run_health_check                one round of the health check: built-in
--                                   (TCP, HTTP, TLS on the C checker thread)
--                                   or custom (Lua, on this thread)
--   start, stop, poll               the background (lb.background,
--                                   through lb.driver)
--
-- Health (the built-in check's configuration, custom rounds, the one
-- drain of flips to on_health_change) is lb.checking's.  Arguments are
-- checked by lb.args; every limit is the C core's.

local ffi = require("ffi")
local core = require("lb.cdef")
local args = require("lb.args")
local backend = require("lb.backend")
local discovery = require("lb.discovery")
local driver = require("lb.driver")
local health = require("lb.health")
local checking = require("lb.checking")

local C = core.C
local ffi_new, ffi_gc, ffi_string, ffi_cast = ffi.new, ffi.gc, ffi.string,
                                               ffi.cast
local type, pairs, ipairs, tonumber, error, pcall, setmetatable =
  type, pairs, ipairs, tonumber, error, pcall, setmetatable
local floor = math.floor
local iter_head_ptr = ffi.typeof("const lb_iter_head *")

local bad_arg, in_openresty = args.bad_arg, driver.in_openresty

local Balancer = {}
Balancer.__index = Balancer

local check_self = args.self_checker(Balancer, "balancer")

local M = { Balancer = Balancer }

-- Flips queued by the checker thread are delivered this often in
-- OpenResty (a timer of each worker); in plain Lua by every poll().
M.EVENT_INTERVAL = 0.1

local errbuf = ffi_new("const char *[1]")
local wall = driver.wall -- discovery_status's updated_at
local hinfo = ffi_new("lb_health_info")
local FAILURE_STATUS = {}
for _, s in ipairs(args.DEFAULT_FAILURE_STATUS) do
  FAILURE_STATUS[s] = true
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
      return nil, "enablement[" .. args.shown(k) .. "] must be a boolean, "
                  .. "got " .. type(v)
    end
    out[backend.canonical(k)] = v
  end
  return out
end

-- ---- the set ----

-- Hand out a new set of tables (list, by identity, index, by record id)
-- for generation `gen`, and forget what belonged to backends that left.
local function install(self, newlist, byident, index, byid, gen)
  self._list, self._byident, self._index, self._byid =
    newlist, byident, index, byid
  for id in pairs(self._last_error) do
    if byid[id] == nil then
      self._last_error[id] = nil
    end
  end
  for id in pairs(self._delivered) do
    if byid[id] == nil then
      self._delivered[id] = nil
    end
  end
  self._gen = gen
end

-- Make tables[i + 1] the table of the C snapshot's backend i, for every
-- backend of the published snapshot, and forget what belonged to
-- backends that left.
local function rebuild(self, tables)
  local newlist, byident, index, byid = {}, {}, {}, {}
  for i = 0, #tables - 1 do
    local t = tables[i + 1]
    newlist[i + 1] = t
    byident[backend.identity(t.addr, t.weight)] = t
    index[t] = i
    C.lb_balancer_health(self._c, i, hinfo)
    byid[tonumber(hinfo.id)] = t
  end
  install(self, newlist, byident, index, byid,
          tonumber(C.lb_balancer_generation(self._c)))
end

-- Publish `list` (decoded backend tables) with `en` (canonical addr ->
-- bool).  Keeps the tables of backends that stay.  Returns true or nil, err
-- (the previous set stays).
local function apply(self, list, en)
  local n = #list
  local arr = ffi_new("lb_backend[?]", n > 0 and n or 1)
  local order = ffi_new("uint32_t[?]", n > 0 and n or 1)
  local count = ffi_new("size_t[1]")
  for i = 1, n do
    local b = list[i]
    local ok, err = backend.fill(arr, i - 1, b, en and en[b.addr])
    if not ok then
      return nil, "backend " .. args.shown(b.addr) .. ": " .. err
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
  local tables = {}
  for i = 0, m - 1 do
    local b = list[order[i] + 1]
    local t = old[backend.identity(b.addr, b.weight)]
    if t then
      t.ext = b.ext
    else
      t = b
    end
    tables[i + 1] = t
  end
  rebuild(self, tables)
  return true
end

-- Adopt the set the core published itself (a DNS or etcd source on the
-- C thread): one whole copy of one snapshot (lb_balancer_backends), the
-- tables of backends that stay kept, the generation taken from that copy.
local function sync(self)
  local c = self._c
  local cap = tonumber(C.lb_balancer_count(c)) + 8
  local arr, ids, n
  local gen = ffi_new("uint64_t[1]")
  while true do
    arr = ffi_new("lb_backend[?]", cap)
    ids = ffi_new("uint64_t[?]", cap)
    n = tonumber(C.lb_balancer_backends(c, arr, cap, ids, gen))
    if n <= cap then
      break
    end
    cap = n + 8
  end
  local old = self._byident
  local newlist, byident, index, byid = {}, {}, {}, {}
  for i = 0, n - 1 do
    local t = backend.from_c(arr[i])
    local ident = backend.identity(t.addr, t.weight)
    t = old[ident] or t
    newlist[i + 1] = t
    byident[ident] = t
    index[t] = i
    byid[tonumber(ids[i])] = t
  end
  install(self, newlist, byident, index, byid, tonumber(gen[0]))
  return true
end

-- Catch up with a set published by the core since we last looked.
local function refresh(self)
  if tonumber(C.lb_balancer_generation(self._c)) ~= self._gen then
    sync(self)
  end
end

local dstatus = ffi_new("lb_discovery_status")

-- The status of the C source as a Lua table.
local function c_status(self)
  C.lb_balancer_discovery_status(self._c, dstatus)
  local ok = dstatus.ok ~= 0
  local err = ffi_string(dstatus.last_error)
  local at = tonumber(dstatus.updated_at)
  return {
    ok = ok,
    last_error = err ~= "" and err or nil,
    updated_at = at > 0 and at or nil,
    revision = dstatus.has_revision ~= 0 and tonumber(dstatus.revision)
               or nil,
    running = dstatus.running ~= 0,
    updates = tonumber(dstatus.updates),
    errors = tonumber(dstatus.errors),
    queries = tonumber(dstatus.queries),
  }
end

-- update() on a C source: ask for a fresh answer; plain Lua waits for it
-- (up to the source's timeout), OpenResty never waits.
local function update_c(self)
  local ticket = C.lb_balancer_discovery_refresh(self._c, errbuf)
  if ticket < 0 then
    return nil, "discovery: " .. ffi_string(errbuf[0])
  end
  if in_openresty() then
    return true
  end
  -- the source's own deadline ends every request; the slack covers the
  -- thread's turn and the publish
  local rc = C.lb_balancer_discovery_wait(self._c, ticket,
                                          self._source_timeout + 1)
  refresh(self)
  if rc == 0 then
    return true
  end
  if rc == core.ERROR then
    return nil, c_status(self).last_error or "discovery failed"
  end
  return nil, "discovery: no answer within " .. self._source_timeout .. " s"
end

-- A discovery function's results (pcall's): published, or nil, err.
local function discovered(self, ok, list, en)
  if not ok then
    return nil, "discovery failed: " .. args.cut(list)
  end
  if list == nil then
    if en ~= nil then
      return nil, "discovery failed: " .. args.cut(en)
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
  return apply(self, decoded, enablement)
end

-- Run discovery now.  true, or nil, err (the previous set stays).
function Balancer:update()
  check_self(self, "update")
  local d = self._discovery
  if d == nil then
    return true -- a static `backends` list: nothing to rediscover
  end
  if self._source then
    -- the C thread counts its own answers (source.c)
    return update_c(self)
  end
  local ok, list, en
  if type(d) == "function" then
    ok, list, en = pcall(d)
  else
    ok, list, en = pcall(d.discover, d)
  end
  local r, err = discovered(self, ok, list, en)
  C.lb_balancer_discovery_count(self._c, r and 1 or 0)
  local st = self._lua_status
  if r then
    st.ok, st.last_error, st.updated_at = true, nil, wall()
    st.updates = st.updates + 1
  else
    st.ok, st.last_error = false, err
    st.errors = st.errors + 1
  end
  return r, err
end

-- The state of discovery: { ok, last_error, updated_at, revision } (and
-- the counts updates, errors; queries for a C source).  `ok` is false
-- before the first answer.  updated_at: seconds since the epoch of the
-- last good answer (nil: none yet); revision: etcd's, else nil.
function Balancer:discovery_status()
  check_self(self, "discovery_status")
  if self._source then
    return c_status(self)
  end
  local st = self._lua_status
  return { ok = st.ok, last_error = st.last_error, updated_at = st.updated_at,
           updates = st.updates, errors = st.errors,
           running = self._started == true }
end

-- ---- the select path ----

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

-- One C select for `key`: plain (count nil), or the pick counted in the
-- same call on the set this object knows (count 0: a selection; 1: and
-- in flight, an acquire; a pick from a newer set is not counted).
local function select_c(self, key, len, max_iterations, count)
  if count then
    return C.lb_balancer_select_counted(self._c, self._gen, key, len,
                                        max_iterations, count, self._it)
  end
  return C.lb_balancer_select(self._c, key, len, max_iterations, self._it)
end

-- The select path proper: key as pointer (a Lua string, or C memory) and
-- length.  Compiles to one FFI call, a generation check and a table load.
local function select_raw(self, key, len, max_iterations, count)
  local idx = select_c(self, key, len, max_iterations, count)
  if idx < 0 then
    return nil
  end
  if tonumber(self._ith.gen) ~= self._gen then
    -- Published by someone else since we last looked (nothing counted):
    -- realign, retry.
    sync(self)
    idx = select_c(self, key, len, max_iterations, count)
    if idx < 0 or tonumber(self._ith.gen) ~= self._gen then
      return nil
    end
  end
  return self._list[idx + 1]
end

-- The first ready backend for `key` in the algorithm's order, or nil.
function Balancer:select(key, max_iterations)
  check_self(self, "select")
  key = key_arg(self, key, "select")
  max_iterations = max_arg(2, max_iterations, "select", self._maxit)
  return select_raw(self, key, #key, max_iterations)
end

-- select() with the key already in C memory (ptr, len): lb.nginx passes
-- nginx's own variable buffer without making (and interning) a Lua string.
-- `ptr` must stay valid for the call.  count as for select_c: lb.nginx's
-- attempt counts its pick in the same call.
function Balancer:_select_cstr(ptr, len, max_iterations, count)
  return select_raw(self, ptr, len, max_iterations or self._maxit, count)
end

-- select(), and the backend's in-flight count goes up by one (release()
-- takes it down), counted in the same FFI call as the pick.
function Balancer:acquire(key, max_iterations)
  check_self(self, "acquire")
  key = key_arg(self, key, "acquire")
  max_iterations = max_arg(2, max_iterations, "acquire", self._maxit)
  return select_raw(self, key, #key, max_iterations, 1)
end

-- Walk the unique candidates for `key`, calling accept(backend, healthy)
-- until it returns true; that backend, or nil.  An error in accept
-- propagates; the balancer stays usable.
function Balancer:select_with(key, max_iterations, accept)
  check_self(self, "select_with")
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
    sync(self)
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

-- Index of a backend given as one of our tables, an address string (its
-- first backend), or a table { addr, weight }.
local function find(self, b, fname)
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
  check_self(self, "ready")
  refresh(self)
  local i = find(self, b, "ready")
  if not i then
    return false
  end
  return C.lb_balancer_ready(self._c, self._gen, i) == 1
end

-- Enable or disable a backend (its health is untouched); given an address
-- string, every backend of that address.  Returns true, or false when no
-- backend of the set matches.
function Balancer:set_enable(b, enable)
  check_self(self, "set_enable")
  refresh(self)
  if type(enable) ~= "boolean" then
    bad_arg(2, "set_enable", "boolean", enable)
  end
  local c, gen, on = self._c, self._gen, enable and 1 or 0
  if type(b) == "string" then
    local addr, found = backend.canonical(b), false
    for j, e in ipairs(self._list) do
      if e.addr == addr and C.lb_balancer_set_enable(c, gen, j - 1, on) == 0
      then
        found = true
      end
    end
    return found
  end
  local i = find(self, b, "set_enable")
  if not i then
    return false
  end
  return C.lb_balancer_set_enable(c, gen, i, on) == 0
end

-- ---- outcomes: report, release (lb.outcomes) ----

require("lb.outcomes").install(Balancer, {
  find = function(self, b, fname) return find(self, b, fname) end,
  sync = function(self) return sync(self) end,
  check_self = check_self,
})

-- ---- panic, backends, status, check_stats, metrics... (lb.state) ----

require("lb.state").install(Balancer, {
  refresh = refresh,
  check_self = check_self,
})

-- ---- the background: start, stop, poll (lb.background) ----

M.shared_tick = require("lb.background").install(Balancer, M, {
  sync = function(self) return sync(self) end,
  refresh = refresh,
  check_self = check_self,
})

-- ---- construction ----

function M.new(opts)
  if type(opts) ~= "table" then
    return nil, "lb.new: options must be a table, got " .. type(opts)
  end
  local ok, err = args.options(opts, discovery.is_discovery)
  if not ok then
    return nil, "lb.new: " .. err
  end
  local check
  if opts.health_check ~= nil then
    check, err = health.check(opts.health_check)
    if not check then
      return nil, "lb.new: health_check: " .. err
    end
  end

  local source_kind, source_cfg = discovery.source(opts.discovery)
  if source_kind then
    source_cfg, err = args.discovery_source(source_kind, source_cfg,
                                            opts.update_frequency)
    if not source_cfg then
      return nil, "lb.new: discovery: " .. err
    end
  end
  local passive, panic, slow
  passive, err = args.passive(opts.passive)
  if passive == nil then
    return nil, "lb.new: " .. err
  end
  panic, err = args.panic_threshold(opts.panic_threshold)
  if not panic then
    return nil, "lb.new: " .. err
  end
  slow, err = args.slow_start(opts.slow_start)
  if slow == nil then
    return nil, "lb.new: " .. err
  end

  local static_list
  if opts.backends ~= nil then
    static_list, err = backend.decode_list(opts.backends, "backends", true)
    if not static_list then
      return nil, "lb.new: " .. err
    end
  end

  local cfg = ffi_new("lb_config")
  cfg.selection = core.SELECTION[opts.selection or "round_robin"].id
  cfg.point_multiple = opts.point_multiple or 160
  cfg.start_unhealthy = opts.start_unhealthy and 1 or 0
  if passive then
    cfg.consecutive_failures = passive.consecutive_failures
    cfg.ejection_time = passive.ejection_time
    cfg.max_ejection_time = passive.max_ejection_time
    cfg.max_ejection_percent = passive.max_ejection_percent
  end
  cfg.panic_threshold = panic
  if slow then
    cfg.slow_start_window = slow.window
    cfg.slow_start_aggression = slow.aggression
    cfg.slow_start_min_weight = slow.min_weight
  end
  cfg.choice_count = opts.choice_count or 0
  cfg.table_size = opts.table_size or 0
  if opts.active_request_bias ~= nil then
    cfg.active_request_bias_set = 1
    cfg.active_request_bias = opts.active_request_bias
  end
  cfg.ewma_decay = opts.ewma_decay or 0
  cfg.hash_balance_factor = opts.hash_balance_factor or 0
  local c = C.lb_balancer_new(cfg, errbuf)
  if c == nil then
    return nil, "lb.new: " .. ffi_string(errbuf[0])
  end
  c = ffi_gc(c, C.lb_balancer_free)
  local capacity = args.shared_capacity(opts.shared)
  if capacity then
    if in_openresty() and ngx.get_phase() ~= "init" then
      return nil, "lb.new: a shared balancer is made in init_by_lua* (in "
                  .. "nginx's master, before it forks the workers), not in "
                  .. "the " .. ngx.get_phase() .. " phase of a worker"
    end
    if C.lb_balancer_share(c, capacity, errbuf) ~= 0 then
      return nil, "lb.new: shared: " .. ffi_string(errbuf[0])
    end
  end
  local it, ith = new_iter()

  local self = setmetatable({
    _c = c,
    _it = it,
    _ith = ith,
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
    _delivered = {},
    _source = source_kind,
    _source_timeout = source_cfg and source_cfg.timeout,
    _lua_status = { ok = false, updates = 0, errors = 0 },
    _shared = capacity ~= nil,
    _role = capacity and "reader" or "private",
    name = opts.name,
    selection = opts.selection or "round_robin",
    _keyless = core.SELECTION[opts.selection or "round_robin"].keyless,
    _passive = passive,
    _failure_status = passive and passive.failure_status or FAILURE_STATUS,
    -- the clock work of lb_balancer_tick: ejections end, windows close,
    -- panic is recounted
    _ticks = (passive or slow or panic > 0) and true or false,
    -- whether lb.nginx acquires and releases around each attempt
    _counts = (passive or core.SELECTION[opts.selection or "round_robin"]
               .counts or opts.hash_balance_factor ~= nil) and true or false,
    health_check_frequency = opts.health_check_frequency,
    update_frequency = opts.update_frequency,
    parallel_health_check = opts.parallel_health_check == true,
    on_health_change = opts.on_health_change,
  }, Balancer)

  -- A static list is the set from the start; with a discovery too, until
  -- the first successful discovery (so a fresh worker never starts empty).
  if static_list then
    ok, err = apply(self, static_list, nil)
    if not ok then
      return nil, "lb.new: backends: " .. err
    end
  end
  if type(self._discovery) == "table" and self._discovery.is_static then
    ok, err = self:update()
    if not ok then
      return nil, "lb.new: " .. err
    end
  end
  if source_kind then
    ok, err = discovery.configure(c, source_kind, source_cfg)
    if not ok then
      return nil, "lb.new: discovery: " .. err
    end
  end
  if check and check.kind ~= "custom" then
    ok, err = checking.setup(self, check)
    if not ok then
      return nil, "lb.new: health_check: " .. err
    end
  end
  return self
end

return M
