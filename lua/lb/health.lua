-- Health-check descriptors: lb.health.tcp{}, lb.health.http{}, and custom
-- checks (a function, or lb.health.custom{}), and their checking.
--
-- The constructors only record their options; lb.new checks them
-- (health.check), so a bad option becomes lb.new's `nil, err`
-- ("health_check: timeout must be ...") instead of a silently missing
-- check.  Numeric limits are the C core's (lb.cdef's LIMITS).

local args = require("lb.args")
local core = require("lb.cdef")

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local LIMITS = core.LIMITS
local integer_in, text, got, shown = args.integer_in, args.text, args.got,
                                     args.shown

local M = {}

local DESC = {} -- marks descriptor tables

local function desc(kind, opts)
  return { [DESC] = true, kind = kind, opts = opts }
end

function M.tcp(opts)
  return desc("tcp", opts == nil and {} or opts)
end

function M.http(opts)
  return desc("http", opts == nil and {} or opts)
end

function M.custom(opts)
  return desc("custom", opts)
end

-- The kind and options of a descriptor made here, or nil for any other
-- value.
function M.descriptor(v)
  if type(v) == "table" and v[DESC] then
    return v.kind, v.opts
  end
end

local COMMON = { timeout = true, consecutive_success = true,
                 consecutive_failure = true }
local KNOWN = {
  tcp = { tls = true },
  http = { host = true, path = true, method = true, headers = true,
           port = true, tls = true, expected_status = true,
           reuse_connection = true },
  custom = { check = true, concurrency = true },
}

-- Default of lb.health.custom's `concurrency`: checks of one parallel
-- round in flight at once.  Each holds one cosocket (a connection slot of
-- the worker) for up to the check's timeout; 32 keeps a round of 1,000
-- backends at a few timeouts while leaving the slots of a default
-- worker_connections (512) to the clients.
M.DEFAULT_CONCURRENCY = 32

local function threshold(v, name)
  if v == nil then
    return 1
  end
  if not integer_in(v, 1, LIMITS.max_threshold) then
    return nil, name .. " must be an integer from 1 to "
                .. LIMITS.max_threshold .. ", got " .. got(v)
  end
  return v
end

local function check_token(v)
  return type(v) == "string" and v ~= "" and not v:find("[%c ]")
end

local TLS_KEYS = { sni = true, verify = true, ca = true }

local function check_tls(tls)
  if tls == nil or tls == false then
    return false
  end
  if tls == true then
    return { verify = false }
  end
  if type(tls) ~= "table" then
    return nil, "tls must be true or a table { sni, verify, ca }"
  end
  for k in pairs(tls) do
    if not TLS_KEYS[k] then
      return nil, "tls: unknown option " .. shown(tostring(k))
    end
  end
  if tls.sni ~= nil and type(tls.sni) ~= "string" then
    return nil, "tls.sni must be a string"
  end
  if tls.verify ~= nil and type(tls.verify) ~= "boolean" then
    return nil, "tls.verify must be a boolean"
  end
  if tls.ca ~= nil and type(tls.ca) ~= "string" then
    return nil, "tls.ca must be a path string"
  end
  return { sni = tls.sni, verify = tls.verify == true, ca = tls.ca }
end

local function http_options(c, o)
  c.method = o.method or "GET"
  if not check_token(c.method) then
    return nil, "method must be an HTTP method token, got " .. text(o.method)
  end
  c.path = o.path or "/"
  if type(c.path) ~= "string" or c.path:sub(1, 1) ~= "/"
     or c.path:find("[%c ]") then
    return nil, "path must be a string starting with '/' without spaces, got "
                .. text(o.path)
  end
  if o.host ~= nil and not check_token(o.host) then
    return nil, "host must be a string without spaces, got " .. text(o.host)
  end
  c.host = o.host
  if o.port ~= nil and not integer_in(o.port, 1, 65535) then
    return nil, "port must be an integer between 1 and 65535, got "
                .. got(o.port)
  end
  c.port = o.port
  local es = o.expected_status
  if es == nil then
    es = { 200 }
  elseif type(es) == "number" then
    es = { es }
  elseif type(es) ~= "table" or #es == 0 then
    return nil, "expected_status must be a status code or a non-empty list "
                .. "of them, got " .. got(es)
  end
  for _, s in ipairs(es) do
    local serr = args.status_error(s)
    if serr then
      return nil, "expected_status: " .. serr
    end
  end
  c.expected_status = es
  c.headers = {}
  if o.headers ~= nil then
    if type(o.headers) ~= "table" then
      return nil, "headers must be a table of name = value"
    end
    for k, hv in pairs(o.headers) do
      if not check_token(k) or k:find(":", 1, true) then
        return nil, "headers: invalid header name " .. text(k)
      end
      if type(hv) == "number" then
        hv = tostring(hv)
      end
      if type(hv) ~= "string" or hv:find("[\r\n]") then
        return nil, "headers: invalid value for " .. shown(k)
      end
      c.headers[#c.headers + 1] = { k, hv }
    end
    table.sort(c.headers, function(a, b) return a[1] < b[1] end)
  end
  if o.reuse_connection ~= nil and type(o.reuse_connection) ~= "boolean" then
    return nil, "reuse_connection must be a boolean"
  end
  c.reuse_connection = o.reuse_connection == true
  return c
end

-- What a function given as health_check is, when it is not a check: the
-- descriptor constructors themselves (lb.health.http instead of
-- lb.health.http{...}), and lb.nginx.connect_check uncalled.  The error
-- text, or nil for any other function (a custom check).
local function uncalled(v)
  for _, kind in ipairs({ "tcp", "http", "custom" }) do
    if v == M[kind] then
      return "got the function lb.health." .. kind .. " itself; call it: "
             .. "lb.health." .. kind .. "({ ... })"
    end
  end
  local ngx_mod = package.loaded["lb.nginx"]
  if type(ngx_mod) == "table" and v == ngx_mod.connect_check then
    return "got the function lb.nginx.connect_check itself; call it: "
           .. "require(\"lb.nginx\").connect_check(timeout)"
  end
end

-- Check a health_check option: a function (a custom check), or a
-- descriptor made here.  Returns the normalized check { kind, timeout,
-- consecutive_success, consecutive_failure, ... } or nil, err.
function M.check(v)
  if type(v) == "function" then
    local e = uncalled(v)
    if e then
      return nil, e
    end
    return { kind = "custom", check = v, consecutive_success = 1,
             consecutive_failure = 1, timeout = 1,
             concurrency = M.DEFAULT_CONCURRENCY }
  end
  local kind, o = M.descriptor(v)
  if not kind then
    return nil, "expected lb.health.tcp({ ... }), lb.health.http({ ... }), "
                .. "lb.health.custom({ check = fn }) or a function "
                .. "check(backend) -> true | nil, err; got " .. text(v)
  end
  if type(o) ~= "table" then
    return nil, kind .. ": options must be a table, got " .. type(o)
  end
  for k in pairs(o) do
    if not COMMON[k] and not KNOWN[kind][k] then
      return nil, kind .. ": unknown option " .. shown(tostring(k))
    end
  end
  local c = { kind = kind }
  local err
  for _, k in ipairs({ "consecutive_success", "consecutive_failure" }) do
    c[k], err = threshold(o[k], k)
    if not c[k] then
      return nil, err
    end
  end
  local t = o.timeout
  if t == nil then
    t = 1
  elseif type(t) ~= "number" or t ~= t or t <= 0
         or t > LIMITS.max_timeout then
    return nil, "timeout must be a number of seconds above 0 and at most "
                .. ("%d"):format(LIMITS.max_timeout) .. ", got " .. got(t)
  end
  c.timeout = t

  if kind == "custom" then
    if type(o.check) ~= "function" then
      return nil, "custom: check must be a function, got " .. type(o.check)
    end
    c.check = o.check
    local n = o.concurrency
    if n == nil then
      n = M.DEFAULT_CONCURRENCY
    elseif not integer_in(n, 1, LIMITS.max_backends) then
      return nil, "custom: concurrency must be an integer from 1 to "
                  .. LIMITS.max_backends .. ", got " .. got(n)
    end
    c.concurrency = n
    return c
  end

  c.tls, err = check_tls(o.tls)
  if c.tls == nil then
    return nil, err
  end
  if kind == "tcp" then
    return c
  end
  return http_options(c, o)
end

return M
