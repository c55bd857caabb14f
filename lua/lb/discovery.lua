-- Service discovery: lb.discovery.static(list), and the sources that run
-- in the C core: lb.discovery.dns{...}, lb.discovery.etcd{...}.
--
-- A static discovery holds a list of backends that the program edits with
-- :add(b), :remove(b), :set(list) and reads with :get().  A balancer made
-- with it discovers at construction and again on every update().
-- Host names are resolved when they are added.
--
-- dns{} and etcd{} only record their options (lb.new checks them, see
-- lb.args.discovery_source, so a bad option is lb.new's nil, err): the
-- source itself runs on the C core's background thread and publishes its
-- sets without Lua.

local ffi = require("ffi")
local core = require("lb.cdef")
local backend = require("lb.backend")

local C = core.C
local ffi_new, ffi_string = ffi.new, ffi.string
local type, error, setmetatable = type, error, setmetatable
local errbuf = ffi_new("const char *[1]")

local Static = {}
Static.__index = Static

local bad_arg = require("lb.args").bad_arg
local check_self = require("lb.args").self_checker(Static, "discovery")

local function key_of(b)
  return backend.identity(b.addr, b.weight)
end

local function copy(b)
  return { addr = b.addr, host = b.host, port = b.port, weight = b.weight,
           ext = b.ext }
end

-- Add backends (an address string or a backend table; a host name adds
-- every address it resolves to).  Returns true, or nil, err.
function Static:add(b)
  check_self(self, "add")
  local tb = type(b)
  if tb ~= "string" and tb ~= "table" then
    bad_arg(1, "add", "string or table", b)
  end
  local list, err = backend.decode(b, true)
  if not list then
    return nil, err
  end
  for i = 1, #list do
    local k = key_of(list[i])
    if not self._index[k] then
      self._list[#self._list + 1] = list[i]
      self._index[k] = list[i]
    end
  end
  return true
end

-- Remove by address (every weight) or by backend table (address and
-- weight).  Returns the number of backends removed.
function Static:remove(b)
  check_self(self, "remove")
  local addr, weight
  if type(b) == "string" then
    addr = backend.canonical(b)
  elseif type(b) == "table" then
    if type(b.addr) ~= "string" then
      error("bad argument #1 to 'remove' (backend table without addr)", 2)
    end
    addr, weight = backend.canonical(b.addr), b.weight or 1
  else
    bad_arg(1, "remove", "string or table", b)
  end
  local kept, removed = {}, 0
  for _, e in ipairs(self._list) do
    if e.addr == addr and (weight == nil or e.weight == weight) then
      self._index[key_of(e)] = nil
      removed = removed + 1
    else
      kept[#kept + 1] = e
    end
  end
  self._list = kept
  return removed
end

-- Replace the whole list.  On bad input nothing changes: nil, err.
function Static:set(list)
  check_self(self, "set")
  if type(list) ~= "table" then
    bad_arg(1, "set", "table", list)
  end
  local decoded, err = backend.decode_list(list, "backends", true)
  if not decoded then
    return nil, err
  end
  local index, out = {}, {}
  for _, b in ipairs(decoded) do
    local k = key_of(b)
    if not index[k] then
      index[k] = b
      out[#out + 1] = b
    end
  end
  self._list, self._index = out, index
  return true
end

-- A copy of the current list of backend tables.
function Static:get()
  check_self(self, "get")
  local out = {}
  for i, b in ipairs(self._list) do
    out[i] = copy(b)
  end
  return out
end

-- The discovery interface: list, enablement.
function Static:discover()
  check_self(self, "discover")
  return self:get(), nil
end

Static.is_static = true

local M = {}

-- lb.discovery.static(list): nil, err when an entry is bad.
function M.static(list)
  local self = setmetatable({ _list = {}, _index = {} }, Static)
  if list ~= nil then
    if type(list) ~= "table" then
      return nil, "lb.discovery.static: expected a list of backends, got "
                  .. type(list)
    end
    local ok, err = self:set(list)
    if not ok then
      return nil, err
    end
  end
  return self
end

local SOURCE = {} -- marks the descriptors of C sources

-- lb.discovery.dns{ name, type, port, resolvers, timeout, min_ttl,
-- max_ttl }
function M.dns(opts)
  return { [SOURCE] = true, kind = "dns", opts = opts }
end

-- lb.discovery.etcd{ endpoints, prefix, timeout, username, password, tls }
function M.etcd(opts)
  return { [SOURCE] = true, kind = "etcd", opts = opts }
end

-- The kind ("dns", "etcd") and options of a C source's descriptor, or nil.
function M.source(v)
  if type(v) == "table" and v[SOURCE] then
    return v.kind, v.opts
  end
end

-- Hand a checked C source configuration (lb.args.discovery_source) to
-- balancer c of the core (lb_balancer_set_dns, _set_etcd).  true, or nil,
-- err.
function M.configure(c, kind, o)
  local rc
  if kind == "dns" then
    local dc = ffi_new("lb_dns_config")
    dc.name, dc.name_len = o.name, #o.name
    dc.type = core.DNS_TYPE[o.type]
    dc.port = o.port
    if o.resolvers then
      dc.resolvers, dc.resolvers_len = o.resolvers, #o.resolvers
    end
    dc.timeout, dc.min_ttl, dc.max_ttl = o.timeout, o.min_ttl, o.max_ttl
    rc = C.lb_balancer_set_dns(c, dc, errbuf)
  else
    local ec = ffi_new("lb_etcd_config")
    ec.endpoints, ec.endpoints_len = o.endpoints, #o.endpoints
    ec.prefix, ec.prefix_len = o.prefix, #o.prefix
    ec.timeout = o.timeout
    if o.username then
      ec.username, ec.username_len = o.username, #o.username
      ec.password, ec.password_len = o.password, #o.password
    end
    ec.tls_verify = o.tls_verify and 1 or 0
    if o.tls_ca then
      ec.tls_ca, ec.tls_ca_len = o.tls_ca, #o.tls_ca
    end
    if o.tls_sni then
      ec.tls_sni, ec.tls_sni_len = o.tls_sni, #o.tls_sni
    end
    rc = C.lb_balancer_set_etcd(c, ec, errbuf)
  end
  if rc < 0 then
    return nil, ffi_string(errbuf[0])
  end
  return true
end

function M.is_discovery(v)
  return type(v) == "table" and (type(v.discover) == "function"
                                 or v[SOURCE] == true)
end

return M
