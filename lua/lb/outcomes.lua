-- Outcomes of requests, as the C core takes them: balancer:report,
-- balancer:release, and lb.nginx's per-attempt calls (_in_flight,
-- _selected, _release_status, _by_addr).  Installed on the Balancer class by
-- lb.balancer, which passes the helpers it shares (find, sync,
-- check_self).

local ffi = require("ffi")
local core = require("lb.cdef")
local args = require("lb.args")

local C = core.C
local ffi_string = ffi.string
local type, tonumber = type, tonumber
local floor = math.floor
local bad_arg = args.bad_arg
local STALE = core.STALE

local errbuf = ffi.new("const char *[1]")

local M = {}

function M.install(Balancer, env)
  local find, sync, check_self = env.find, env.sync, env.check_self

  -- A result as C takes it: 1 success, 0 failure.  true; false or an error
  -- string (connect failure, timeout); an HTTP status, a failure when it is
  -- in failure_status.  nil for anything else (the caller raises, so the
  -- error names its caller's line).
  local function result_code(self, result)
    if result == true then
      return 1
    end
    local t = type(result)
    if result == false or t == "string" then
      return 0
    end
    if t == "number" and result == floor(result) then
      return self._failure_status[result] and 0 or 1
    end
  end
  local RESULT = "true, false, an error string or an HTTP status"

  -- Seconds, or -1 (unknown) for nil; nil for a bad value.
  local function latency_value(latency)
    if latency == nil then
      return -1
    end
    if type(latency) == "number" and latency >= 0 then
      return latency
    end
  end
  local LATENCY = "latency in seconds (a non-negative number)"

  -- The index of backend b for a C call on the published set: a set
  -- published behind this object's back is re-read first.  nil when b is
  -- not in the set.
  local function index_now(self, b, fname)
    if tonumber(C.lb_balancer_generation(self._c)) ~= self._gen then
      sync(self)
    end
    return find(self, b, fname)
  end

  -- For lb.metrics: re-read a set published behind this object's back, so
  -- that _list and the C core's indexes agree (as status() does).
  function Balancer:_refresh()
    if tonumber(C.lb_balancer_generation(self._c)) ~= self._gen then
      sync(self)
    end
  end

  local function unknown(fname, b)
    return nil, fname .. ": unknown backend "
                .. args.text(type(b) == "table" and b.addr or b)
  end

  -- One outcome of a request to `backend`: true, or nil, err (an unknown
  -- backend, a latency out of range).  A wrong type raises.
  function Balancer:report(b, result, latency)
    check_self(self, "report")
    local r, l = result_code(self, result), latency_value(latency)
    if r == nil then
      bad_arg(2, "report", RESULT, result)
    end
    if l == nil then
      bad_arg(3, "report", LATENCY, latency)
    end
    local i = self._index[b] or find(self, b, "report")
    local rc = i and C.lb_balancer_report(self._c, self._gen, i, r, l, errbuf)
    if rc == STALE then
      i = index_now(self, b, "report")
      rc = i and C.lb_balancer_report(self._c, self._gen, i, r, l, errbuf)
    end
    if not i or rc == STALE then
      return unknown("report", b)
    end
    if rc < 0 then
      return nil, "report: " .. ffi_string(errbuf[0])
    end
    return true
  end

  -- The end of a request acquire() counted: in-flight goes down by one
  -- (never below zero) and, with a result, it is reported as by report().
  -- One FFI call.  true, or nil, err.
  function Balancer:release(b, result, latency)
    check_self(self, "release")
    local r, l = -1, -1
    if result ~= nil then
      r, l = result_code(self, result), latency_value(latency)
      if r == nil then
        bad_arg(2, "release", RESULT, result)
      end
      if l == nil then
        bad_arg(3, "release", LATENCY, latency)
      end
    end
    local i = self._index[b] or find(self, b, "release")
    local rc = i and C.lb_balancer_release(self._c, self._gen, i, r, l, errbuf)
    if rc == STALE then
      i = index_now(self, b, "release")
      rc = i and C.lb_balancer_release(self._c, self._gen, i, r, l, errbuf)
    end
    if not i or rc == STALE then
      return unknown("release", b)
    end
    if rc < 0 then
      return nil, "release: " .. ffi_string(errbuf[0])
    end
    return true
  end

  -- For lb.nginx: a request's attempt starts on `b` (a backend table of
  -- this balancer, as select returned it) or ends on it (delta -1).
  function Balancer:_in_flight(b, delta)
    local i = self._index[b]
    if i then
      C.lb_balancer_in_flight_add(self._c, self._gen, i, delta)
    end
  end

  -- For lb.nginx: count one pick of backend table b (an attempt picked by
  -- select_with: a retry, or an accept function), for
  -- lb_backend_selected_total.  One FFI call.
  function Balancer:_selected(b)
    local i = self._index[b]
    if i then
      C.lb_balancer_selected(self._c, self._gen, i)
    end
  end

  -- For lb.nginx's log phase: release backend b (one of this balancer's
  -- tables) after an attempt that got HTTP status `status`, latency in
  -- seconds or nil.  One FFI call; nothing raised.
  function Balancer:_release_status(b, status, latency)
    local i = self._index[b]
    if i then
      C.lb_balancer_release(self._c, self._gen, i,
                            self._failure_status[status] and 0 or 1,
                            latency or -1, errbuf)
    end
  end

  -- nginx names an attempt by its address alone ($upstream_addr), and one
  -- address may be in the set at several weights (two identities).  The
  -- map of the current list: the first backend of each address, and the
  -- backends of each address that repeats (_addr_dups; nil when none does,
  -- the common case).
  local function addr_sync(self)
    local list = self._list
    local map, dups = {}, nil
    for _, b in ipairs(list) do
      local first = map[b.addr]
      if first == nil then
        map[b.addr] = b
      else
        dups = dups or {}
        local d = dups[b.addr] or { first }
        d[#d + 1] = b
        dups[b.addr] = d
      end
    end
    self._addr_map, self._addr_dups, self._addr_list = map, dups, list
  end

  -- For lb.nginx's log phase: the backend of an address text as nginx
  -- writes it in $upstream_addr, or nil.  Of several backends at that
  -- address (the same server), the first with a request of this process
  -- in flight, so the release lands where balance() counted (else the
  -- first).
  function Balancer:_by_addr(addr)
    if self._addr_list ~= self._list then
      addr_sync(self)
    end
    local b = self._addr_map[addr]
    local dups = self._addr_dups
    local d = dups and dups[addr]
    if d ~= nil then
      for _, x in ipairs(d) do
        local i = self._index[x]
        if i and C.lb_balancer_in_flight_own(self._c, self._gen, i) > 0 then
          return x
        end
      end
    end
    return b
  end
end

return M
