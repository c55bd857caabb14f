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

local C = core.C
local tonumber, tostring, pairs, ipairs, type, error, getmetatable =
  tonumber, tostring, pairs, ipairs, type, error, getmetatable
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

-- Counters split by result: family, result label, lb_record_info field.
local BY_RESULT = {
  { "lb_health_checks_total", "ok", "checks_ok" },
  { "lb_health_checks_total", "fail", "checks_failed" },
  { "lb_passive_reports_total", "ok", "reports_ok" },
  { "lb_passive_reports_total", "fail", "reports_failed" },
}

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

-- Append the samples of one balancer to the per-family buffers
-- (string.buffer: a scrape of 1,000 backends writes some 25,000 lines,
-- none of them made into a Lua string of its own).
local function collect(samples, name, bal)
  local c = bal._c
  local rows = bal:status()
  local bl, labels = backend_labels(name, rows)
  samples.lb_backends:put("lb_backends{", bl, "} ", #rows, "\n")
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
  local s_flips, s_dur = samples.lb_health_flips_total, samples[DUR]
  for i, r in ipairs(rows) do
    local l = labels[i]
    s_ready:put("lb_backend_ready{", l, "} ", b01(r.ready), "\n")
    s_healthy:put("lb_backend_healthy{", l, "} ", b01(r.healthy), "\n")
    s_enabled:put("lb_backend_enabled{", l, "} ", b01(r.enabled), "\n")
    s_ejected:put("lb_backend_ejected{", l, "} ", b01(r.ejected == true),
                  "\n")
    s_inflight:put("lb_backend_in_flight{", l, "} ", r.in_flight or 0, "\n")
    s_weight:put("lb_backend_weight{", l, "} ", r.weight, "\n")
    if C.lb_balancer_record(c, i - 1, rinfo) == 0 then
      s_sel:put("lb_backend_selected_total{", l, "} ", int(rinfo.selections),
                "\n")
      for _, br in ipairs(BY_RESULT) do
        samples[br[1]]:put(br[1], "{", l, ',result="', br[2], '"} ',
                           int(rinfo[br[3]]), "\n")
      end
      s_ej:put("lb_ejections_total{", l, "} ", int(rinfo.ejections), "\n")
    end
    if C.lb_balancer_stats(c, i - 1, rstats) == 0 then
      s_flips:put("lb_health_flips_total{", l, "} ", int(rstats.flips), "\n")
      local cum = 0
      for k = 1, NB do
        cum = cum + tonumber(rstats.check_buckets[k - 1])
        s_dur:put(DUR, "_bucket{", l, BUCKET_LE[k], cum, "\n")
      end
      local count = int(rstats.check_timed)
      s_dur:put(DUR, '_bucket{', l, ',le="+Inf"} ', count, "\n",
                DUR, "_sum{", l, "} ",
                num(tonumber(rstats.check_time_ns) / 1e9), "\n",
                DUR, "_count{", l, "} ", count, "\n")
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

-- The exposition of `what`: { name = balancer, ... } (names sorted).
function M.render(what)
  local names
  what, names = M.balancers(what, "metrics")
  local samples = {}
  for _, f in ipairs(FAMILIES) do
    samples[f[1]] = buffer.new()
  end
  for _, name in ipairs(names) do
    collect(samples, tostring(name), what[name])
  end
  local out = buffer.new()
  for _, f in ipairs(FAMILIES) do
    out:put("# HELP ", f[1], " ", f[3], "\n# TYPE ", f[1], " ", f[2], "\n")
    out:put(samples[f[1]])
  end
  return out:tostring()
end

return M
