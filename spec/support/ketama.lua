-- A plain-Lua model of nginx's `hash $key consistent` ring (Ketama, as in
-- ngx_http_upstream_hash_module.c), used by specs as a second opinion when
-- lb and nginx disagree.  Slow and simple on purpose; LuaJIT only (`bit`).
--
--   local ring = require("support.ketama").new({ { addr = "127.0.0.1:80",
--                                                   weight = 2 }, ... })
--   ring:pick("/k/1")  --> "127.0.0.1:80"

local bit = require("bit")
local band, bxor, rshift = bit.band, bit.bxor, bit.rshift

local M = {}

local TWO32 = 4294967296

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if band(c, 1) ~= 0 then
      c = bxor(rshift(c, 1), 0xEDB88320)
    else
      c = rshift(c, 1)
    end
  end
  crc_table[i] = c
end

-- crc state (not finalised) after feeding string s.
local function crc_update(c, s)
  for i = 1, #s do
    c = bxor(rshift(c, 8), crc_table[band(bxor(c, s:byte(i)), 0xff)])
  end
  return c
end

local function crc_final(c)
  return bit.bnot(c) % TWO32
end

function M.crc32(s)
  return crc_final(crc_update(-1, s))
end

local function le32(v)
  return string.char(v % 256, math.floor(v / 256) % 256,
                     math.floor(v / 65536) % 256,
                     math.floor(v / 16777216) % 256)
end

-- The host and port text nginx hashes for a server written as addr.
function M.server_text(addr)
  local path = addr:match("^unix:(.*)$")
  if path then return path, "" end
  local host, port = addr:match("^(.*):(%d+)$")
  return host, port
end

-- backends: array of { addr = text, weight = n } in configuration order;
-- `hash_as = { host, port }` overrides the text hashed for a server (to model
-- Pingora, which hashes "::1" where nginx hashes "[::1]").
function M.new(backends, point_multiple)
  point_multiple = point_multiple or 160
  local points = {}
  for si, b in ipairs(backends) do
    local host, port = M.server_text(b.addr)
    if b.hash_as then host, port = b.hash_as[1], b.hash_as[2] end
    local base = crc_update(crc_update(crc_update(-1, host), "\0"), port)
    local prev = 0
    for _ = 1, (b.weight or 1) * point_multiple do
      local h = crc_final(crc_update(base, le32(prev)))
      points[#points + 1] = { h, #points, si }
      prev = h
    end
  end
  table.sort(points, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local hashes, owners = {}, {}
  for _, p in ipairs(points) do
    if #hashes == 0 or hashes[#hashes] ~= p[1] then
      hashes[#hashes + 1] = p[1]
      owners[#owners + 1] = backends[p[3]].addr
    end
  end
  return setmetatable({ hashes = hashes, owners = owners },
                      { __index = M })
end

-- Index of the first ring point at or after crc32(key), wrapping.
local function first_point(self, key)
  local h = M.crc32(key)
  local hashes = self.hashes
  local lo, hi = 1, #hashes + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if hashes[mid] < h then lo = mid + 1 else hi = mid end
  end
  if lo > #hashes then lo = 1 end
  return lo
end

-- The address the first ring point at or after crc32(key) belongs to.
function M:pick(key)
  return self.owners[first_point(self, key)]
end

-- The owners of n consecutive ring points from key's first point
-- (pingora-ketama's node_iter; duplicates included).
function M:walk(key, n)
  local i, out = first_point(self, key), {}
  for k = 1, n do
    out[k] = self.owners[i]
    i = i % #self.hashes + 1
  end
  return out
end

return M
