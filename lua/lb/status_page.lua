-- An HTML status page of balancers, readable at a glance: one table per
-- balancer, one row per backend, its state in colour (up, down, disabled,
-- ejected, never checked), weight, last check and its error, requests in
-- flight, selections, ejections and check counts; the worker that
-- answered and the time.  Self-contained (inline CSS, no script, no
-- external asset), so it works offline.
--
--   status_page.render({ app = balancer }, { refresh = 5, worker = pid })

local ffi = require("ffi")
local core = require("lb.cdef")

local C = core.C
local tostring, tonumber, ipairs = tostring, tonumber, ipairs
local concat = table.concat
local format = string.format

local M = {}

local rinfo = ffi.new("lb_record_info")

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;",
                                         [">"] = "&gt;", ['"'] = "&quot;",
                                         ["'"] = "&#39;" }))
end
M.escape = esc

-- The state of a row, as a word and a CSS class.
local function state_of(r)
  if not r.enabled then
    return "disabled", "off"
  end
  if r.ejected then
    return "ejected", "ej"
  end
  if not r.healthy then
    return "down", "down"
  end
  if r.checked == false then
    return "unchecked", "unk"
  end
  return "up", "up"
end

local function ago(t, now)
  if not t then
    return "never"
  end
  local d = now - t
  if d < 0 then
    d = 0
  end
  if d < 60 then
    return format("%.1f s ago", d)
  end
  if d < 3600 then
    return format("%d min ago", math.floor(d / 60))
  end
  return format("%d h ago", math.floor(d / 3600))
end

local CSS = [[
body{font:14px/1.4 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}
.meta{color:#666;margin-bottom:1.2em}
h2{font-size:1.1em;margin:1.4em 0 .4em}
h2 .sum{font-weight:normal;color:#555;margin-left:.8em}
table{border-collapse:collapse;background:#fff;min-width:60%}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#e8e8e8}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.st{font-weight:bold;text-align:center;color:#fff;min-width:6em}
tr.up td.st{background:#2e8b3a}
tr.down td.st{background:#c0392b}
tr.off td.st{background:#7f8c8d}
tr.ej td.st{background:#d35400}
tr.unk td.st{background:#b7950b}
tr.down{background:#fdecea}
tr.ej{background:#fdf0e6}
tr.off{background:#f2f2f2;color:#777}
td.err{color:#a00;font-family:monospace}
.legend span{display:inline-block;padding:0 .5em;margin-right:.4em;color:#fff}
]]

local function table_of(name, bal, now)
  local rows = bal:status()
  local up = 0
  for _, r in ipairs(rows) do
    if r.ready then
      up = up + 1
    end
  end
  local out = {}
  out[#out + 1] = format('<h2>%s<span class="sum">%d of %d ready, '
                         .. '%s, role %s</span></h2>', esc(name), up, #rows,
                         esc(bal.selection), esc(bal:role()))
  out[#out + 1] = "<table><tr><th>backend</th><th>state</th><th>weight</th>"
                  .. "<th>last check</th><th>last error</th>"
                  .. "<th>in flight</th><th>selected</th>"
                  .. "<th>ejections</th><th>checks ok / failed</th></tr>"
  for i, r in ipairs(rows) do
    local word, class = state_of(r)
    local ok, failed, ej = 0, 0, r.ejections or 0
    if C.lb_balancer_record(bal._c, i - 1, rinfo) == 0 then
      ok, failed = tonumber(rinfo.checks_ok), tonumber(rinfo.checks_failed)
      ej = tonumber(rinfo.ejections)
    end
    out[#out + 1] = format(
      '<tr class="%s"><td>%s</td><td class="st">%s</td><td class="n">%d</td>'
      .. '<td>%s</td><td class="err">%s</td><td class="n">%d</td>'
      .. '<td class="n">%d</td><td class="n">%d</td><td class="n">%d / %d'
      .. "</td></tr>",
      class, esc(r.addr), word, r.weight, ago(r.last_check, now),
      esc(r.last_error or ""), r.in_flight or 0, r.selected or 0, ej, ok,
      failed)
  end
  out[#out + 1] = "</table>"
  return concat(out, "\n")
end

-- The page.  opts: refresh (seconds; nil: none), worker (shown as the
-- process that answered), title.
function M.render(what, opts)
  opts = opts or {}
  local names
  what, names = require("lb.metrics").balancers(what, "status_page")
  local now = os.time()
  local body = {}
  for _, name in ipairs(names) do
    body[#body + 1] = table_of(tostring(name), what[name], now)
  end
  local refresh = ""
  if opts.refresh then
    refresh = format('<meta http-equiv="refresh" content="%d">',
                     math.max(1, math.floor(tonumber(opts.refresh) or 5)))
  end
  return concat({
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    refresh,
    "<title>" .. esc(opts.title or "lb status") .. "</title>",
    "<style>" .. CSS .. "</style></head><body>",
    "<h1>" .. esc(opts.title or "lb status") .. "</h1>",
    format('<div class="meta">answered by worker %s at %s UTC%s</div>',
           esc(opts.worker or "-"), os.date("!%Y-%m-%d %H:%M:%S", now),
           opts.refresh and format(", refreshes every %ss",
                                   esc(opts.refresh)) or ""),
    '<div class="legend"><span style="background:#2e8b3a">up</span>'
    .. '<span style="background:#c0392b">down</span>'
    .. '<span style="background:#d35400">ejected</span>'
    .. '<span style="background:#7f8c8d">disabled</span>'
    .. '<span style="background:#b7950b">unchecked</span></div>',
    concat(body, "\n"),
    "</body></html>",
    "",
  }, "\n")
end

return M
