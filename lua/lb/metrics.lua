-- Prometheus text exposition (format 0.0.4) of balancers.
--
--   metrics.render({ app = balancer, api = other })  -> text
--
-- Every figure is read from the C core (the records, in the shared
-- region with `shared`), so a scrape costs no per-request work and every
-- process of a shared balancer reports the same values.  Families (one
-- HELP and TYPE each, whatever the number of balancers):
--
--   lb_backends                        gauge    {balancer}
--   lb_backend_ready, _healthy, _enabled, _ejected, _in_flight, _weight
--                                      gauge    {balancer, backend}
--   lb_backend_selected_total          counter  {balancer, backend}
--   lb_health_checks_total             counter  {balancer, backend, result}
--   lb_health_flips_total              counter  {balancer, backend}
--   lb_ejections_total                 counter  {balancer, backend}
--   lb_passive_reports_total           counter  {balancer, backend, result}
--   lb_discovery_updates_total         counter  {balancer}
--   lb_discovery_errors_total          counter  {balancer}
--   lb_health_check_duration_seconds   histogram {balancer, backend, le}
--
-- `backend` is the backend's address; when one address is in the set
-- with several weights, each of those is "addr weight=N".

local ffi = require("ffi")
local buffer = require("string.buffer")
local core = require("lb.cdef")
local checking = require("lb.checking")

local C = core.C
local tonumber, tostring, pairs, ipairs, type, error, getmetatable =
  tonumber, tostring, pairs, ipairs, type, error, getmetatable
local setmetatable = setmetatable
local sort = table.sort
local format = string.format

local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

local rinfo = ffi.new("lb_record_info")
local rstats = ffi.new("lb_record_stats")
local u64a, u64b = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")

-- A label value as the exposition format wants it: \ " and newline escaped.
local function escape(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"',
                                        ["\n"] = "\\n" }))
end
M.escape = escape

local FAMILIES = {
  { "lb_backends", "gauge", "Backends in the balancer's set." },
  { "lb_backend_ready", "gauge",
    "1 when the backend is healthy, enabled and not ejected." },
  { "lb_backend_healthy", "gauge", "1 when the backend's checks pass." },
  { "lb_backend_enabled", "gauge", "1 when the backend is enabled." },
  { "lb_backend_ejected", "gauge",
    "1 while passive health keeps the backend ejected." },
  { "lb_backend_in_flight", "gauge",
    "Requests acquired and not yet released, every process's." },
  { "lb_backend_weight", "gauge", "The backend's weight." },
  { "lb_backend_selected_total", "counter",
    "Times the backend was picked for a request (acquire)." },
  { "lb_health_checks_total", "counter",
    "Active health checks of the backend, by result." },
  { "lb_health_flips_total", "counter",
    "Changes of the backend's state (checks, ejections, returns)." },
  { "lb_ejections_total", "counter",
    "Times passive health ejected the backend." },
  { "lb_passive_reports_total", "counter",
    "Outcomes of requests reported for the backend, by result." },
  { "lb_discovery_updates_total", "counter",
    "Discovery runs that gave a set (published or unchanged)." },
  { "lb_discovery_errors_total", "counter",
    "Discovery runs that failed (the previous set stayed)." },
  { "lb_health_check_duration_seconds", "histogram",
    "Duration of active health checks." },
}

-- Prometheus floats: integers without exponent, the rest with %.17g.
local function num(v)
  if v == math.floor(v) and v > -2^53 and v < 2^53 then
    return format("%d", v)
  end
  return format("%.17g", v)
end

local function le_text(v)
  return num(v)
end

-- The labels of each backend of balancer b, in sorted order.
local function backend_labels(name, rows)
  local seen, out = {}, {}
  for _, r in ipairs(rows) do
    seen[r.addr] = (seen[r.addr] or 0) + 1
  end
  local bl = 'balancer="' .. escape(name) .. '"'
  for i, r in ipairs(rows) do
    local label = r.addr
    if seen[r.addr] > 1 then
      label = r.addr .. " weight=" .. r.weight
    end
    out[i] = bl .. ',backend="' .. escape(label) .. '"'
  end
  return bl, out
end

local function b01(v)
  return v and "1" or "0"
end

-- An integer counter or gauge, for string.buffer:put (which writes an
-- integral double below 10^14 with all its digits, larger ones as
-- exponent floats: both valid in the exposition).
local function int(v)
  return tonumber(v)
end

local DUR = "lb_health_check_duration_seconds"
local BUCKET_LE = {} -- ',le="0.0005"} ' ...
for k, v in ipairs(core.CHECK_BUCKET_BOUNDS) do
  BUCKET_LE[k] = ',le="' .. le_text(v) .. '"} '
end
local NB = #BUCKET_LE

-- Integers below this are written from a table of their texts: a scrape
-- writes some 25,000 small counts (most of them 0), and a table load is
-- cheaper than formatting a double each time.  The texts are what
-- string.buffer:put writes for the same number.
local SMALL_MAX = 4096
local SMALL = {}
for v = 0, SMALL_MAX - 1 do
  SMALL[v] = tostring(v)
end

-- A count as uint64_t, written as put(tonumber(v)) would write it.
local function count(v)
  local n = tonumber(v)
  if n < SMALL_MAX then
    return SMALL[n]
  end
  return n
end

-- What a scrape of a balancer reuses while its set is unchanged (the same
-- _list table, the same name): per backend, its labels and the first part
-- of each of its histogram lines.  Weak keys: a collected balancer drops
-- its entry.
local cache = setmetatable({}, { __mode = "k" })

local function prepared(name, bal)
  local list = bal._list
  local p = cache[bal]
  if p and p.list == list and p.name == name then
    return p
  end
  local bl, labels = backend_labels(name, list)
  local hist = {}
  for i, l in ipairs(labels) do
    local h = {}
    for k = 1, NB do
      h[k] = DUR .. "_bucket{" .. l .. BUCKET_LE[k]
    end
    h[NB + 1] = DUR .. "_bucket{" .. l .. ',le="+Inf"} '
    h[NB + 2] = "\n" .. DUR .. "_sum{" .. l .. "} "
    h[NB + 3] = "\n" .. DUR .. "_count{" .. l .. "} "
    hist[i] = h
  end
  p = { list = list, name = name, bl = bl, labels = labels, hist = hist }
  cache[bal] = p
  return p
end

local hinfo = ffi.new("lb_health_info")

-- Append the samples of one balancer to the per-family buffers
-- (string.buffer: a scrape of 1,000 backends writes some 25,000 lines,
-- none of them made into a Lua string of its own).  Three FFI calls per
-- backend (health, record, stats: relaxed loads in one read-side section
-- each); a backend whose figures are gone (the set changed meanwhile)
-- ends the balancer's rows, as status() does.
local function collect(samples, name, bal)
  local c = bal._c
  bal:_refresh()
  checking.check_running(bal)
  local p = prepared(name, bal)
  local list, bl, labels, hist = p.list, p.bl, p.labels, p.hist
  samples.lb_backends:put("lb_backends{", bl, "} ", #list, "\n")
  C.lb_balancer_discovery_counts(c, u64a, u64b)
  samples.lb_discovery_updates_total:put("lb_discovery_updates_total{", bl,
                                         "} ", int(u64a[0]), "\n")
  samples.lb_discovery_errors_total:put("lb_discovery_errors_total{", bl,
                                        "} ", int(u64b[0]), "\n")
  local s_ready, s_healthy = samples.lb_backend_ready, samples.lb_backend_healthy
  local s_enabled, s_ejected = samples.lb_backend_enabled,
                               samples.lb_backend_ejected
  local s_inflight, s_weight = samples.lb_backend_in_flight,
                               samples.lb_backend_weight
  local s_sel, s_ej = samples.lb_backend_selected_total,
                      samples.lb_ejections_total
  local s_checks, s_reports = samples.lb_health_checks_total,
                              samples.lb_passive_reports_total
  local s_flips, s_dur = samples.lb_health_flips_total, samples[DUR]
  for i = 1, #list do
    if C.lb_balancer_health(c, i - 1, hinfo) ~= 0
       or C.lb_balancer_record(c, i - 1, rinfo) ~= 0 then
      break
    end
    local l = labels[i]
    local healthy, enabled = hinfo.healthy ~= 0, hinfo.enabled ~= 0
    local ejected = hinfo.ejected ~= 0
    s_ready:put("lb_backend_ready{", l, "} ",
                b01(healthy and enabled and not ejected), "\n")
    s_healthy:put("lb_backend_healthy{", l, "} ", b01(healthy), "\n")
    s_enabled:put("lb_backend_enabled{", l, "} ", b01(enabled), "\n")
    s_ejected:put("lb_backend_ejected{", l, "} ", b01(ejected), "\n")
    s_inflight:put("lb_backend_in_flight{", l, "} ", count(rinfo.in_flight),
                   "\n")
    s_weight:put("lb_backend_weight{", l, "} ", list[i].weight, "\n")
    s_sel:put("lb_backend_selected_total{", l, "} ", count(rinfo.selections),
              "\n")
    s_checks:put("lb_health_checks_total{", l, ',result="ok"} ',
                 count(rinfo.checks_ok), "\n",
                 "lb_health_checks_total{", l, ',result="fail"} ',
                 count(rinfo.checks_failed), "\n")
    s_reports:put("lb_passive_reports_total{", l, ',result="ok"} ',
                  count(rinfo.reports_ok), "\n",
                  "lb_passive_reports_total{", l, ',result="fail"} ',
                  count(rinfo.reports_failed), "\n")
    s_ej:put("lb_ejections_total{", l, "} ", count(rinfo.ejections), "\n")
    if C.lb_balancer_stats(c, i - 1, rstats) == 0 then
      s_flips:put("lb_health_flips_total{", l, "} ", count(rstats.flips),
                  "\n")
      local h = hist[i]
      local cum = 0
      for k = 1, NB do
        cum = cum + tonumber(rstats.check_buckets[k - 1])
        s_dur:put(h[k], cum < SMALL_MAX and SMALL[cum] or cum, "\n")
      end
      local n = count(rstats.check_timed)
      s_dur:put(h[NB + 1], n, h[NB + 2],
                num(tonumber(rstats.check_time_ns) / 1e9), h[NB + 3], n, "\n")
    end
  end
end

-- The names of { name = balancer, ... } in sorted order, or an error
-- (level 4: the caller of the caller's caller) naming `fname`.  A balancer
-- alone is { [its name, or "default"] = balancer }.
function M.balancers(what, fname)
  local Balancer = require("lb.balancer").Balancer
  if getmetatable(what) == Balancer then
    what = { [what.name or "default"] = what }
  end
  if type(what) ~= "table" then
    error("bad argument #1 to '" .. fname .. "' (balancer or table "
          .. "{ name = balancer } expected, got " .. type(what) .. ")", 4)
  end
  local names = {}
  for name, b in pairs(what) do
    if getmetatable(b) ~= Balancer then
      error("bad argument #1 to '" .. fname .. "' (value of "
            .. tostring(name) .. " is not a balancer)", 4)
    end
    names[#names + 1] = name
  end
  sort(names, function(a, b) return tostring(a) < tostring(b) end)
  return what, names
end

-- The buffers of a scrape, kept between scrapes so that a scrape of the
-- same size reuses their memory (render never yields: no two scrapes of
-- one Lua state overlap).
local samples, out = {}, buffer.new()
for _, f in ipairs(FAMILIES) do
  samples[f[1]] = buffer.new()
end

-- The exposition of `what`: { name = balancer, ... } (names sorted).
function M.render(what)
  local names
  what, names = M.balancers(what, "metrics")
  for _, f in ipairs(FAMILIES) do
    samples[f[1]]:reset()
  end
  for _, name in ipairs(names) do
    collect(samples, tostring(name), what[name])
  end
  out:reset()
  for _, f in ipairs(FAMILIES) do
    out:put("# HELP ", f[1], " ", f[3], "\n# TYPE ", f[1], " ", f[2], "\n")
    out:put(samples[f[1]])
  end
  return out:tostring()
end

return M
