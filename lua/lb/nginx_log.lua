-- lb.nginx's log phase: release and report every attempt of a request
-- that balance() counted (Peer:log in lb.nginx).
--
-- Each attempt is one entry of $upstream_addr ("a, b" within an upstream,
-- " : " between upstreams), with its status in $upstream_status ("502",
-- "-" when there was no response to read) and its time in
-- $upstream_response_time ("0.012", "-").  A status is reported (a
-- failure when in failure_status; nginx writes 502 for a connect failure,
-- 504 for a timeout); no status means the attempt ended on our side (the
-- client went away): released, not reported.
--
-- Cost: the common request has one attempt.  Its three variables are read
-- with nginx's own ngx_http_get_variable and the names' hash keys computed
-- once at load, the numbers parsed from nginx's bytes, and the release is
-- one call into the core: no per-request Lua string but the address
-- (interned once per backend).  Where nginx does not export that function
-- (a build without dynamic modules), lua-resty-core's variable accessor is
-- used, which lowercases and hashes each name per call.

-- luacheck: globals ngx

local ffi = require("ffi")
local bit = require("bit")
require("resty.core.var")
local get_request = require("resty.core.base").get_request

local ngx_var = ngx.var
local tonumber = tonumber
local str_find, str_gmatch = string.find, string.gmatch
local ffi_string = ffi.string
local band = bit.band

local M = {}

-- nginx's ngx_str_t and ngx_variable_value_t (src/core/ngx_string.h,
-- unchanged since nginx 0.7): `unsigned len:28` then the flags valid,
-- no_cacheable, not_found, escape in the same 32-bit word (x86-64 and
-- aarch64 gcc allocate bit fields from the low bit), read as one word
-- because the JIT compiles no bit-field access.
pcall(ffi.cdef, [[
typedef struct { size_t len; const unsigned char *data; } lb_ngx_str_t;
typedef struct { uint32_t len_flags; const unsigned char *data; }
    lb_ngx_variable_value_t;
]])
local LEN_MASK = 0x0fffffff
local NOT_FOUND = 0x40000000

local get_variable
do
  local ok = pcall(ffi.cdef, [[
lb_ngx_variable_value_t *ngx_http_get_variable(ngx_http_request_t *r,
    lb_ngx_str_t *name, size_t key);
size_t ngx_hash_key(const unsigned char *data, size_t len);
]])
  if ok then
    ok = pcall(function() return ffi.C.ngx_http_get_variable,
                                  ffi.C.ngx_hash_key end)
  end
  if ok then
    get_variable = ffi.C.ngx_http_get_variable
  end
end

-- One variable's name for ngx_http_get_variable: its ngx_str_t (kept
-- alive by the table) and its hash key.
local function var_name(name)
  local s = ffi.new("lb_ngx_str_t")
  local text = ffi.new("unsigned char[?]", #name + 1, name)
  s.len, s.data = #name, text
  return { str = s, text = text, key = ffi.C.ngx_hash_key(text, #name) }
end

local V_ADDR, V_STATUS, V_TIME
if get_variable then
  V_ADDR, V_STATUS, V_TIME = var_name("upstream_addr"),
    var_name("upstream_status"), var_name("upstream_response_time")
end

-- The fallback: lua-resty-core's accessor (as lb.nginx's balance() uses).
local var_get = ffi.C.ngx_http_lua_ffi_var_get
local value_ptr = ffi.new("unsigned char *[1]")
local value_len = ffi.new("size_t[1]")
local errmsg = ffi.new("char *[1]")
local lowbuf = ffi.new("char[32]")
local ubyte_ptr = ffi.typeof("const unsigned char *")
local NAMES = { [1] = "upstream_addr", [2] = "upstream_status",
                [3] = "upstream_response_time" }

-- Variable `which` (1 addr, 2 status, 3 time) of request r in nginx's own
-- memory: pointer, length; nil when nginx has none.
local function raw_value(r, which)
  if get_variable then
    local v = which == 1 and V_ADDR or which == 2 and V_STATUS or V_TIME
    local vv = get_variable(r, v.str, v.key)
    if vv == nil or band(vv.len_flags, NOT_FOUND) ~= 0 then
      return nil, 0
    end
    return vv.data, band(vv.len_flags, LEN_MASK)
  end
  local name = NAMES[which]
  if var_get(r, name, #name, lowbuf, 0, value_ptr, value_len, errmsg) == 0
  then
    return ffi.cast(ubyte_ptr, value_ptr[0]), tonumber(value_len[0])
  end
  return nil, 0
end

-- "200" -> 200; nil for anything else ("-", a list).
local function raw_status(p, n)
  if p == nil or n ~= 3 then
    return nil
  end
  local a, b, c = p[0] - 48, p[1] - 48, p[2] - 48
  if a < 0 or a > 9 or b < 0 or b > 9 or c < 0 or c > 9 then
    return nil
  end
  return a * 100 + b * 10 + c
end

-- "0.012" -> 0.012; nil for "-".  nginx writes seconds with 3 decimals
-- ("%T.%03M"), and below 10 s that is 5 bytes, read without a loop (a
-- loop would be a trace of its own to enter and leave per request).
local function raw_seconds(p, n)
  if p == nil or n < 1 then
    return nil
  end
  if n == 5 and p[1] == 46 then
    local a, b, c, d = p[0] - 48, p[2] - 48, p[3] - 48, p[4] - 48
    if a >= 0 and a <= 9 and b >= 0 and b <= 9 and c >= 0 and c <= 9
       and d >= 0 and d <= 9 then
      return (a * 1000 + b * 100 + c * 10 + d) / 1000
    end
  end
  local v, scale, seen_dot = 0, 1, false
  for i = 0, n - 1 do
    local c = p[i]
    if c == 46 and not seen_dot then
      seen_dot = true
    elseif c >= 48 and c <= 57 then
      v = v * 10 + (c - 48)
      if seen_dot then
        scale = scale * 10
      end
    else
      return nil
    end
  end
  return v / scale
end

-- Whether the n bytes at p hold a list: a "," or a " : ".  libc's memchr
-- for the common answer (no list, no space); a space (a unix path may
-- hold one) is looked at as a string.
pcall(ffi.cdef, "void *memchr(const void *s, int c, size_t n);")
local memchr = ffi.C.memchr
local function is_list(p, n)
  if memchr(p, 44, n) ~= nil then -- ","
    return true
  end
  return memchr(p, 32, n) ~= nil
         and str_find(ffi_string(p, n), " : ", 1, true) ~= nil
end

-- One attempt of a list ends: its backend (by the address nginx wrote),
-- its status and time as text.
local function attempt_done(bal, addr, status, rtime)
  local b = bal:_by_addr(addr)
  if b == nil then
    return -- the upstream's name (no peer was set), or a set that changed
  end
  local st = tonumber(status)
  if st then
    bal:_release_status(b, st, tonumber(rtime))
  else
    bal:_in_flight(b, -1)
  end
end

-- The fields of a $upstream_* list: ", " between attempts of one
-- upstream, " : " between upstreams (an internal redirect); the i-th of
-- each list is the i-th attempt.
local function fields(s)
  local out, n = {}, 0
  if s then
    for f in str_gmatch(s, "[^,%s]+") do
      if f ~= ":" then
        n = n + 1
        out[n] = f
      end
    end
  end
  return out, n
end

-- Release and report every attempt of the current request on balancer
-- bal (one that counts).  Nothing raised; nothing when the request set no
-- peer of bal.
function M.log(bal)
  local r = get_request()
  if r == nil then
    return
  end
  local ap, al = raw_value(r, 1)
  if ap == nil then
    return
  end
  if not is_list(ap, al) then
    -- one attempt, the common case
    local b = bal:_by_addr(ffi_string(ap, al))
    if b == nil then
      return
    end
    local st = raw_status(raw_value(r, 2))
    if st == nil then
      return bal:_in_flight(b, -1)
    end
    return bal:_release_status(b, st, raw_seconds(raw_value(r, 3)))
  end
  local a, n = fields(ffi_string(ap, al))
  local st = fields(ngx_var.upstream_status)
  local rt = fields(ngx_var.upstream_response_time)
  for i = 1, n do
    attempt_done(bal, a[i], st[i], rt[i])
  end
end

return M
