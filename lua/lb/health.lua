-- Health-check descriptors: lb.health.tcp{}, lb.health.http{}, and custom
-- checks (a function, or lb.health.custom{}).
--
-- The constructors only record their options; lb.new validates them, so a
-- bad option becomes lb.new's `nil, err` ("health_check: timeout must be a
-- positive number") instead of a silently missing check.

local type, pairs, ipairs, tostring, floor = type, pairs, ipairs, tostring,
                                             math.floor

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

local COMMON = { timeout = true, consecutive_success = true,
                 consecutive_failure = true }
local KNOWN = {
  tcp = { tls = true },
  http = { host = true, path = true, method = true, headers = true,
           port = true, tls = true, expected_status = true,
           reuse_connection = true },
  custom = { check = true },
}

local function positive_int(v, name, max)
  if v == nil then
    return 1
  end
  if type(v) ~= "number" or v ~= floor(v) or v < 1 or v > (max or 1e9) then
    return nil, name .. " must be a positive integer, got " .. tostring(v)
  end
  return v
end

local function check_token(v, name)
  if type(v) ~= "string" or v == "" or v:find("[%c ]") then
    return nil, name .. " must be a non-empty string without spaces or "
                .. "control characters"
  end
  return v
end

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
    if k ~= "sni" and k ~= "verify" and k ~= "ca" then
      return nil, "tls: unknown option '" .. tostring(k) .. "'"
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

-- Validate a health_check option value.  Returns a normalized check
-- { kind, timeout, consecutive_success, consecutive_failure, ... } or
-- nil, err.
function M.validate(v)
  if type(v) == "function" then
    return { kind = "custom", check = v, consecutive_success = 1,
             consecutive_failure = 1 }
  end
  if type(v) ~= "table" or not v[DESC] then
    return nil, "expected lb.health.tcp{}, lb.health.http{}, "
                .. "lb.health.custom{} or a function, got " .. type(v)
  end
  local kind, o = v.kind, v.opts
  if type(o) ~= "table" then
    return nil, kind .. ": options must be a table, got " .. type(o)
  end
  for k in pairs(o) do
    if not COMMON[k] and not KNOWN[kind][k] then
      return nil, kind .. ": unknown option '" .. tostring(k) .. "'"
    end
  end
  local c = { kind = kind }
  local err
  c.consecutive_success, err = positive_int(o.consecutive_success,
                                            "consecutive_success", 1e6)
  if not c.consecutive_success then
    return nil, err
  end
  c.consecutive_failure, err = positive_int(o.consecutive_failure,
                                            "consecutive_failure", 1e6)
  if not c.consecutive_failure then
    return nil, err
  end
  local t = o.timeout
  if t == nil then
    t = 1
  elseif type(t) ~= "number" or t ~= t or t <= 0 or t > 86400 then
    return nil, "timeout must be a positive number of seconds, got "
                .. tostring(t)
  end
  c.timeout = t

  if kind == "custom" then
    if type(o.check) ~= "function" then
      return nil, "custom: check must be a function, got " .. type(o.check)
    end
    c.check = o.check
    return c
  end

  c.tls, err = check_tls(o.tls)
  if c.tls == nil then
    return nil, err
  end
  if kind == "tcp" then
    return c
  end

  c.method = o.method or "GET"
  if not check_token(c.method, "method") then
    return nil, "method must be an HTTP method token, got "
                .. tostring(o.method)
  end
  c.path = o.path or "/"
  if type(c.path) ~= "string" or c.path:sub(1, 1) ~= "/"
     or c.path:find("[%c ]") then
    return nil, "path must be a string starting with '/' without spaces, got "
                .. tostring(o.path)
  end
  if o.host ~= nil and not check_token(o.host, "host") then
    return nil, "host must be a string without spaces, got " .. tostring(o.host)
  end
  c.host = o.host
  if o.port ~= nil then
    local p = o.port
    if type(p) ~= "number" or p ~= floor(p) or p < 1 or p > 65535 then
      return nil, "port must be an integer between 1 and 65535, got "
                  .. tostring(p)
    end
  end
  c.port = o.port
  local es = o.expected_status
  if es == nil then
    es = { 200 }
  elseif type(es) == "number" then
    es = { es }
  elseif type(es) ~= "table" or #es == 0 then
    return nil, "expected_status must be a status code or a list of them"
  end
  for _, s in ipairs(es) do
    if type(s) ~= "number" or s ~= floor(s) or s < 100 or s > 999 then
      return nil, "expected_status: invalid status " .. tostring(s)
    end
  end
  c.expected_status = es
  c.headers = {}
  if o.headers ~= nil then
    if type(o.headers) ~= "table" then
      return nil, "headers must be a table of name = value"
    end
    for k, hv in pairs(o.headers) do
      if type(k) ~= "string" or not check_token(k, "header")
         or k:find(":", 1, true) then
        return nil, "headers: invalid header name " .. tostring(k)
      end
      if type(hv) == "number" then
        hv = tostring(hv)
      end
      if type(hv) ~= "string" or hv:find("[\r\n]") then
        return nil, "headers: invalid value for '" .. k .. "'"
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

return M
