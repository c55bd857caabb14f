-- lb in OpenResty: the balancer_by_lua* helper and a JSON status handler.
--
--   init_by_lua_block {
--     local lb = require("lb")
--     app = assert(lb.new({ backends = { "127.0.0.1:8081", "[::1]:8082" },
--                           selection = "consistent" }))
--     app_peer = assert(require("lb.nginx").new(app, { key = "header:X-Key" }))
--   }
--   init_worker_by_lua_block { assert(app:start()) }
--   upstream app {
--     server 127.0.0.1:1;            # placeholder, never connected to
--     balancer_by_lua_block { app_peer:balance() }
--     keepalive 64;                  # after balancer_by_lua_block
--   }
--   location = /lb-status { content_by_lua_block {
--     require("lb.nginx").status(app) } }
--   log_by_lua_block { app_peer:log() }   # with passive health or a
--                                         # counting selection
--
-- balance() picks with select_with: the first candidate in the algorithm's
-- order that is ready (or that the user's accept rule takes) and that this
-- request has not tried yet.  On the first attempt it asks nginx for
-- tries - 1 more attempts (ngx.balancer.set_more_tries); nginx comes back
-- to balance() after a failure that proxy_next_upstream covers
-- (get_last_failure() is set then), and the backends listed in
-- $upstream_addr, the ones tried so far, are skipped.  The first attempt
-- is one select (the walk in C, which also counts the pick) unless the
-- user gave an accept rule, and keeps no per-request state (no ngx.ctx).
--
-- A balancer that counts (passive health, a selection flagged
-- LB_SELECTION_COUNTS, hash_balance_factor) gets one in-flight count per
-- attempt from balance() (the first attempt's with its pick, in C); log()
-- in log_by_lua* gives each back and reports its outcome.  nginx runs the
-- log phase of every request it finalizes, also one the client aborted or
-- that timed out, so every attempt balance() counted is released there
-- (see docs/openresty.md).
--
-- Nothing here yields: the balancer phase cannot.  The accept state lives
-- in upvalues for the duration of one select_with call, which no other
-- request can interleave with.

-- luacheck: globals ngx

if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" then
  error("lb.nginx needs OpenResty's ngx API (it runs in nginx with the Lua "
        .. "module); in plain LuaJIT use require(\"lb\")", 2)
end

local ngx_balancer = require("ngx.balancer")

local set_current_peer = ngx_balancer.set_current_peer
local set_more_tries = ngx_balancer.set_more_tries
local get_last_failure = ngx_balancer.get_last_failure
local ngx = ngx
local ngx_var = ngx.var
local ngx_log, ngx_exit = ngx.log, ngx.exit
local ngx_ERR, ngx_WARN, ngx_ERROR = ngx.ERR, ngx.WARN, ngx.ERROR
local type, tostring, tonumber, setmetatable, getmetatable, pairs, ipairs =
  type, tostring, tonumber, setmetatable, getmetatable, pairs, ipairs
local floor = math.floor

-- ngx.exit(NGX_BUSY) in the balancer phase is nginx's "no live upstreams":
-- the attempt ends without a connection, and the client gets a 502 (or
-- the error_page for it) on a connection that stays open.
local NGX_BUSY = -3

local M = { _VERSION = "0.2.0", DEFAULT_TRIES = 3 }

local Peer = {}
Peer.__index = Peer

local args = require("lb.args")
local checking = require("lb.checking")
local check_self = args.self_checker(Peer, "peer")
local tally, prefix, check_running = checking.tally, checking.prefix,
                                     checking.check_running

-- set_current_peer's text for each backend table (ngx_parse_url syntax:
-- "1.2.3.4", "[::1]" with its brackets, "unix:/path" with no port).
-- Weak keys: a backend discovery drops is collected with its entry.
local peer_host = setmetatable({}, { __mode = "k" })

local function host_of(b)
  local h = peer_host[b]
  if h == nil then
    if b.port == nil then
      h = b.addr                         -- "unix:/path"
    elseif b.host:find(":", 1, true) then
      h = "[" .. b.host .. "]"
    else
      h = b.host
    end
    peer_host[b] = h
  end
  return h
end
M.peer_host = host_of

-- Key getters.  ngx.var gives exactly what nginx's own $variables hold, so
-- "header:X-Key" is the key of nginx's `hash $http_x_key consistent`.
local function var_getter(name)
  return function()
    return ngx_var[name] or ""
  end
end

-- The same variable read without a Lua string: lua-resty-core's FFI
-- accessor (declared by resty.core.var) hands back nginx's buffer, which
-- the select goes through as pointer + length.  Per-request unique keys
-- (URIs) would otherwise each be interned and later collected.
local ffi = require("ffi")
require("resty.core.var")
local get_request = require("resty.core.base").get_request
local var_get = ffi.C.ngx_http_lua_ffi_var_get
local value_ptr = ffi.new("unsigned char *[1]")
local value_len = ffi.new("size_t[1]")
local errmsg = ffi.new("char *[1]")
local cchar_ptr = ffi.typeof("const char *")
local EMPTY = ""

local function raw_var(self)
  local name = self.rawvar
  local r = get_request()
  if r ~= nil and var_get(r, name, #name, self.lowbuf, 0, value_ptr,
                          value_len, errmsg) == 0 then
    return ffi.cast(cchar_ptr, value_ptr[0]), tonumber(value_len[0])
  end
  return EMPTY, 0
end

local function key_getter(spec)
  if spec == nil then
    return nil
  end
  if type(spec) == "function" then
    return function()
      local k = spec()
      if k == nil then
        return ""
      end
      return tostring(k)
    end
  end
  if type(spec) ~= "string" then
    return nil, "key must be a string or a function, got " .. type(spec)
  end
  if spec == "uri" or spec == "request_uri" or spec == "remote_addr"
     or spec == "host" then
    return var_getter(spec), spec
  end
  local kind, name = spec:match("^(%a+):(.+)$")
  local var
  if kind == "header" and name:find("^[%w%-_]+$") then
    var = "http_" .. name:lower():gsub("%-", "_")
  elseif kind == "cookie" and name:find("^[%w%-_%.]+$") then
    var = "cookie_" .. name
  elseif kind == "arg" and name:find("^[%w%-_%.]+$") then
    var = "arg_" .. name
  elseif kind == "var" and name:find("^[%w_]+$") then
    var = name
  end
  if var then
    return var_getter(var), var
  end
  return nil, "key must be 'uri', 'request_uri', 'remote_addr', 'host', "
              .. "'header:<name>', 'cookie:<name>', 'arg:<name>', "
              .. "'var:<name>' or a function, got '" .. spec .. "'"
end

-- Create the helper for one balancer.  opts:
--   key             how to get the key: 'uri', 'request_uri', 'remote_addr',
--                   'host', 'header:<name>', 'cookie:<name>', 'arg:<name>',
--                   'var:<name>', or function() -> string (nil: "").
--                   Required for "fnv" and "consistent".
--   accept          function(backend, healthy) -> boolean, the rule for
--                   taking a candidate (default: healthy, i.e. ready).
--                   Backends this request already tried are never offered.
--   tries           attempts per request, first included (default 3); the
--                   retries also need proxy_next_upstream to cover the
--                   failure and proxy_next_upstream_tries to allow them.
--   max_iterations  bound of the walk (default: the balancer's).
-- Returns the helper, or nil, err.
function M.new(balancer, opts)
  local lb = require("lb")
  if getmetatable(balancer) ~= lb.Balancer then
    return nil, "lb.nginx.new: a balancer (from lb.new) expected, got "
                .. type(balancer)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    return nil, "lb.nginx.new: options must be a table, got " .. type(opts)
  end
  for k in pairs(opts) do
    if k ~= "key" and k ~= "accept" and k ~= "tries"
       and k ~= "max_iterations" then
      return nil, "lb.nginx.new: unknown option '" .. tostring(k) .. "'"
    end
  end
  local getkey, rawvar = key_getter(opts.key)
  if getkey == nil and opts.key ~= nil then
    return nil, "lb.nginx.new: " .. rawvar
  end
  if not getkey and not balancer._keyless then
    return nil, "lb.nginx.new: selection '" .. balancer.selection
                .. "' needs a key (option key)"
  end
  if opts.accept ~= nil and type(opts.accept) ~= "function" then
    return nil, "lb.nginx.new: accept must be a function, got "
                .. type(opts.accept)
  end
  local tries = opts.tries or M.DEFAULT_TRIES
  if type(tries) ~= "number" or tries ~= floor(tries) or tries < 1
     or tries > 1000 then
    return nil, "lb.nginx.new: tries must be an integer between 1 and 1000, "
                .. "got " .. args.got(tries)
  end
  local mi = opts.max_iterations
  local mi_err = lb._max_iterations_error(mi)
  if mi_err then
    return nil, "lb.nginx.new: " .. mi_err
  end
  return setmetatable({
    balancer = balancer,
    getkey = getkey,
    rawvar = rawvar,
    lowbuf = rawvar and ffi.new("char[?]", #rawvar + 1) or nil,
    accept = opts.accept,
    tries = tries,
    max_iterations = mi,
    counts = balancer._counts,
  }, Peer)
end

-- State of the select_with call in progress (see the top of the file).
local cur_tried, cur_accept

local function accept(b, healthy)
  if cur_tried ~= nil and cur_tried[b.addr] then
    return false
  end
  if cur_accept ~= nil then
    return cur_accept(b, healthy) == true
  end
  return healthy
end

local function pick(self, key, tried)
  if tried == nil and self.accept == nil then
    -- The common case: the whole walk in C.
    return self.balancer:select(key, self.max_iterations)
  end
  cur_tried, cur_accept = tried, self.accept
  -- An error in the user's accept propagates, as select_with's does; the
  -- state is reset on the next call.
  local b = self.balancer:select_with(key, self.max_iterations, accept)
  cur_tried, cur_accept = nil, nil
  return b
end

-- The peers this request has tried: nginx's $upstream_addr lists them
-- ("a, b" within an upstream, " : " between upstreams), in the same text
-- as a backend's addr ("1.2.3.4:80", "[::1]:80", "unix:/p").  Read only on
-- a retry, so the first attempt allocates nothing per request.
local function tried_peers()
  local s = ngx_var.upstream_addr
  local set = {}
  if s then
    for a in s:gmatch("[^,%s]+") do
      set[a] = true
    end
  end
  return set
end

-- In balancer_by_lua*: choose the peer of this attempt and hand it to
-- nginx.  Returns the backend.  When no backend can be chosen it logs a
-- warning and ends the attempt as "no live upstreams" (502); when nginx
-- rejects the peer, as an error (500).  Either way nothing is connected
-- to the upstream's placeholder server.
-- Why an attempt found no backend, for its log line: counted by the C
-- core (lb_balancer_tally, one call), on this failure path only.
local function why_none(self, retry)
  local t = tally(self.balancer)
  local n, ready = t.backends, t.ready
  if n == 0 then
    return "the set is empty"
  end
  if ready == 0 then
    local parts = {}
    for _, k in ipairs({ "unhealthy", "disabled", "ejected" }) do
      if t[k] > 0 then
        parts[#parts + 1] = t[k] .. " " .. k
      end
    end
    return (n == 1 and "the only backend is down"
            or ("all " .. n .. " backends are down")) .. " ("
           .. table.concat(parts, ", ") .. ")"
  end
  local of = " (" .. ready .. " of " .. n .. " ready)"
  if retry then
    return "every ready backend was tried" .. of
  end
  if self.accept then
    return "the accept function took none of the candidates" .. of
  end
  return "no ready backend within max_iterations = "
         .. (self.max_iterations or self.balancer._maxit) .. of
end

-- The first attempt's pick.  Without an accept rule it is one C call
-- that also counts the pick (a selection; in flight as well when the
-- balancer counts): the second result says so.
local function pick_first(self)
  local bal = self.balancer
  if self.accept == nil then
    local count = self.counts and 1 or 0
    if self.rawvar then
      local ptr, len = raw_var(self)
      return bal:_select_cstr(ptr, len, self.max_iterations, count), true
    end
    local key = self.getkey and self.getkey() or ""
    return bal:_select_cstr(key, #key, self.max_iterations, count), true
  end
  return pick(self, self.getkey and self.getkey() or nil, nil), false
end

function Peer:balance()
  check_self(self, "balance")
  local getkey = self.getkey
  local tries = self.tries
  local b, counted, retry
  if tries == 1 or get_last_failure() == nil then
    b, counted = pick_first(self)
    if b and tries > 1 then
      local ok, err = set_more_tries(tries - 1)
      if not ok then
        ngx_log(ngx_ERR, "lb: set_more_tries: ", err)
      end
    end
  else
    retry = true
    check_running(self.balancer) -- a retry: maybe no check ever runs
    b = pick(self, getkey and getkey() or nil, tried_peers())
  end
  if not b then
    if not retry then
      check_running(self.balancer)
    end
    ngx_log(ngx_WARN, prefix(self.balancer), "no backend available: ",
            why_none(self, retry == true))
    return ngx_exit(NGX_BUSY)
  end
  local ok, err = set_current_peer(host_of(b), b.port)
  if not ok then
    if counted and self.counts then
      -- no attempt starts, none is listed in $upstream_addr for log():
      -- the in-flight count goes now (the selection stays counted)
      self.balancer:_in_flight(b, -1)
    end
    ngx_log(ngx_ERR, "lb: set_current_peer(", b.addr, "): ", err)
    return ngx_exit(ngx_ERROR)
  end
  if counted then
    return b
  end
  if self.counts then
    -- counted once the peer is set: every such attempt is listed in
    -- $upstream_addr, which log() releases (an acquire counts as a
    -- selection)
    self.balancer:_in_flight(b, 1)
  else
    self.balancer:_selected(b) -- lb_backend_selected_total
  end
  return b
end

-- In log_by_lua*: release and report every attempt of this request that
-- balance() counted (lb.nginx_log).  A no-op for a balancer that does not
-- count.
local log_attempts = require("lb.nginx_log").log

function Peer:log()
  check_self(self, "log")
  if self.counts then
    return log_attempts(self.balancer)
  end
end

-- A balancer's status() as JSON text: an array of rows for one balancer,
-- or an object { name = rows } for a table of named balancers.  A missing
-- last_error is null.
-- Keys of a status row in the order the JSON gives them: the contract's
-- first, then the rest sorted by name.
local ROW_KEYS = { "addr", "weight", "healthy", "enabled", "ready",
                   "last_error", "checked", "last_check", "in_flight",
                   "selected" }
local ROW_RANK = {}
for i, k in ipairs(ROW_KEYS) do
  ROW_RANK[k] = i
end

local function row_json(cjson, row)
  local keys = {}
  for k in pairs(row) do
    keys[#keys + 1] = k
  end
  for _, k in ipairs(ROW_KEYS) do
    if row[k] == nil and (k == "last_error" or k == "last_check") then
      keys[#keys + 1] = k -- null, not left out
    end
  end
  table.sort(keys, function(a, b)
    local ra, rb = ROW_RANK[a] or 1000, ROW_RANK[b] or 1000
    if ra ~= rb then
      return ra < rb
    end
    return a < b
  end)
  local parts = {}
  for i, k in ipairs(keys) do
    local v = row[k]
    parts[i] = cjson.encode(k) .. ":" .. (v == nil and "null"
                                          or cjson.encode(v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- A balancer's status() as a JSON array, keys in a stable order.
local function rows_json(cjson, b)
  local parts = {}
  for i, row in ipairs(b:status()) do
    parts[i] = row_json(cjson, row)
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

function M.status_json(what)
  local cjson = require("cjson")
  local lb = require("lb")
  if getmetatable(what) == lb.Balancer then
    return rows_json(cjson, what)
  end
  if type(what) ~= "table" then
    error("bad argument #1 to 'status_json' (balancer or table of "
          .. "balancers expected, got " .. type(what) .. ")", 2)
  end
  local names, parts = {}, {}
  for name in pairs(what) do
    names[#names + 1] = name
  end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for i, name in ipairs(names) do
    parts[i] = cjson.encode(tostring(name)) .. ":"
               .. rows_json(cjson, what[name])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- In content_by_lua*: serve status_json(what) with this worker's pid in
-- the X-LB-Worker header (every worker keeps its own health view).
function M.status(what)
  local body = M.status_json(what)
  ngx.header["Content-Type"] = "application/json"
  ngx.header["X-LB-Worker"] = tostring(ngx.worker.pid())
  ngx.say(body)
end

-- In content_by_lua*: the Prometheus exposition of `what` (a balancer, or
-- { name = balancer, ... }), with the exposition's content type.
function M.metrics(what)
  local text = require("lb.metrics").render(what)
  ngx.header["Content-Type"] = require("lb.metrics").CONTENT_TYPE
  ngx.header["X-LB-Worker"] = tostring(ngx.worker.pid())
  ngx.print(text)
end

-- In content_by_lua*: the HTML status page of `what` (a balancer, or
-- { name = balancer, ... }).  opts: refresh (seconds), title.
function M.status_page(what, opts)
  local o = {}
  for k, v in pairs(opts or {}) do
    o[k] = v
  end
  o.worker = tostring(ngx.worker.pid())
  local html = require("lb.status_page").render(what, o)
  ngx.header["Content-Type"] = "text/html; charset=utf-8"
  ngx.header["X-LB-Worker"] = o.worker
  ngx.print(html)
end

-- A custom health check for OpenResty: connect with a cosocket (TCP or
-- unix socket) within `timeout` seconds.  For lb.new's health_check when
-- the Lua side should do the probing; the built-in lb.health.tcp runs on
-- the C thread instead.
function M.connect_check(timeout)
  timeout = tonumber(timeout) or 1
  local ms = floor(timeout * 1000)
  return function(b)
    local sock = ngx.socket.tcp()
    sock:settimeout(ms)
    local ok, err
    if b.port == nil then
      ok, err = sock:connect(b.addr)
    else
      ok, err = sock:connect(b.host, b.port)
    end
    if not ok then
      return nil, "connect: " .. tostring(err)
    end
    sock:close()
    return true
  end
end

return M
