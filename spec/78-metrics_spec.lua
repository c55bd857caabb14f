-- The Prometheus exposition, checked by the real tooling (Debian's
-- `prometheus` ships promtool) and by a parser here: families, types and
-- labels; values that agree with status(); counters that never decrease;
-- cumulative histogram buckets; label values escaped (a unix path may hold
-- `"`, `\` and a newline).
local lb = require("lb")
local h = require("helpers")
local nginx = require("support.nginx")
local servers = require("support.servers")

local q = nginx.q

-- Run promtool check metrics on `text`: ok, output.
local function promtool(text)
  local dir = assert(nginx.mkdtemp("lb-promtool"))
  local path = dir .. "/metrics.txt"
  nginx.write_file(path, text)
  local p = io.popen("promtool check metrics < " .. q(path) .. " 2>&1; echo rc=$?")
  local out = p:read("*a")
  p:close()
  nginx.rmtree(dir)
  return out:match("rc=0%s*$") ~= nil, out
end

-- Parse the exposition: { families = { name = { type, help } },
-- samples = { { name, labels = {k = v}, value } } }, or raise.
local function unescape(v)
  return (v:gsub("\\(.)", { ["\\"] = "\\", ['"'] = '"', n = "\n" }))
end

local function parse(text)
  local fam, samples, order = {}, {}, {}
  for line in text:gmatch("([^\n]*)\n") do
    if line:match("^# HELP ") then
      local name, help = line:match("^# HELP (%S+) (.*)$")
      assert(not (fam[name] and fam[name].help), "two HELP for " .. name)
      fam[name] = fam[name] or {}
      fam[name].help = help
      order[#order + 1] = name
    elseif line:match("^# TYPE ") then
      local name, typ = line:match("^# TYPE (%S+) (%S+)$")
      assert(fam[name] and not fam[name].type, "TYPE of " .. name)
      fam[name].type = typ
    elseif line ~= "" then
      local name, rest = line:match("^([%w_:]+)(.*)$")
      local labels = {}
      local lbody, value = rest:match("^{(.*)} (%S+)$")
      if not lbody then
        value = rest:match("^ (%S+)$")
      else
        local i = 1
        while i <= #lbody do
          local k, j = lbody:match('^([%w_]+)="()', i)
          assert(k, "label at " .. i .. " of " .. line)
          local v, e = {}, j
          while true do
            local c = lbody:sub(e, e)
            if c == "\\" then
              v[#v + 1] = lbody:sub(e, e + 1)
              e = e + 2
            elseif c == '"' then
              break
            else
              v[#v + 1] = c
              e = e + 1
            end
          end
          labels[k] = unescape(table.concat(v))
          i = e + 1
          if lbody:sub(i, i) == "," then
            i = i + 1
          end
        end
      end
      samples[#samples + 1] = { name = name, labels = labels,
                                value = assert(tonumber(value) or
                                               (value == "+Inf" and math.huge),
                                               line) }
    end
  end
  return { families = fam, samples = samples, order = order }
end

local function family_of(m, name)
  if m.families[name] then
    return name
  end
  local base = name:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
  return base
end

local function find(m, name, labels)
  for _, s in ipairs(m.samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(labels) do
        if s.labels[k] ~= v then
          ok = false
        end
      end
      if ok then
        return s.value
      end
    end
  end
end

describe("metrics", function()
  local srv, dir
  setup(function()
    srv = servers.start("http")
    dir = assert(nginx.mkdtemp("lb-metrics"))
  end)
  teardown(function()
    srv:stop()
    nginx.rmtree(dir)
  end)

  it("pass promtool and agree with status()", function()
    local odd = 'unix:' .. dir .. '/a"b\\c\nd.sock'
    local closed = "127.0.0.1:" .. assert(nginx.free_port())
    local app = h.new({
      backends = { srv:addr(), closed, "[::1]:9", { addr = closed, weight = 3 } },
      health_check = lb.health.http({ timeout = 1 }),
    })
    local odd_b = h.new({
      backends = { odd, "10.1.2.3:80" },
      health_check = function(b)
        if b.addr:find("sock") then
          return nil, "no such socket"
        end
        return true
      end,
    })
    assert(app:run_health_check())
    assert(odd_b:run_health_check())
    -- selections and in flight through the C core
    local C = require("lb.cdef").C
    local idx
    for i, be in ipairs(app:backends()) do
      if be.addr == srv:addr() then idx = i - 1 end
    end
    for _ = 1, 3 do
      C.lb_balancer_selected(app._c, app._gen, idx)
    end
    C.lb_balancer_in_flight_add(app._c, app._gen, idx, 2) -- 2 selections too
    local text = lb.metrics({ app = app, ['we"ird'] = odd_b })
    local ok, out = promtool(text)
    assert(ok, "promtool: " .. out .. "\n" .. text)

    local m = parse(text)
    -- each family once, with its type
    local want = {
      lb_backends = "gauge", lb_backend_ready = "gauge",
      lb_backend_healthy = "gauge", lb_backend_enabled = "gauge",
      lb_backend_ejected = "gauge", lb_backend_in_flight = "gauge",
      lb_backend_weight = "gauge", lb_backend_selected_total = "counter",
      lb_health_checks_total = "counter", lb_health_flips_total = "counter",
      lb_ejections_total = "counter", lb_discovery_updates_total = "counter",
      lb_discovery_errors_total = "counter",
      lb_health_check_duration_seconds = "histogram",
    }
    for name, typ in pairs(want) do
      assert.is_table(m.families[name], name)
      assert.equal(typ, m.families[name].type, name)
    end
    for _, s in ipairs(m.samples) do
      assert.is_table(m.families[family_of(m, s.name)], s.name)
      assert.is_string(s.labels.balancer)
    end
    -- values agree with status()
    local function check_rows(name, bal)
      local rows = bal:status()
      assert.equal(#rows, find(m, "lb_backends", { balancer = name }))
      local seen = {}
      for _, r in ipairs(rows) do seen[r.addr] = (seen[r.addr] or 0) + 1 end
      for _, r in ipairs(rows) do
        local label = seen[r.addr] > 1 and (r.addr .. " weight=" .. r.weight)
                      or r.addr
        local l = { balancer = name, backend = label }
        assert.equal(r.ready and 1 or 0, find(m, "lb_backend_ready", l), label)
        assert.equal(r.healthy and 1 or 0, find(m, "lb_backend_healthy", l))
        assert.equal(r.weight, find(m, "lb_backend_weight", l))
        assert.equal(r.in_flight, find(m, "lb_backend_in_flight", l))
        assert.equal(r.selected, find(m, "lb_backend_selected_total", l))
        local okc = find(m, "lb_health_checks_total",
                         { balancer = name, backend = label, result = "ok" })
        local failc = find(m, "lb_health_checks_total",
                           { balancer = name, backend = label, result = "fail" })
        assert.equal(1, okc + failc, label) -- one round
        assert.equal(r.healthy and 1 or 0, okc)
        -- the histogram: cumulative, +Inf equals the count
        local prev = 0
        for _, s in ipairs(m.samples) do
          if s.name == "lb_health_check_duration_seconds_bucket"
             and s.labels.balancer == name and s.labels.backend == label then
            assert.is_true(s.value >= prev)
            prev = s.value
          end
        end
        assert.equal(prev, find(m, "lb_health_check_duration_seconds_count", l))
        assert.equal(1, prev)
      end
    end
    check_rows("app", app)
    check_rows('we"ird', odd_b)
    assert.equal(5, find(m, "lb_backend_selected_total",
                         { balancer = "app", backend = srv:addr() }))
    assert.equal(2, find(m, "lb_backend_in_flight",
                         { balancer = "app", backend = srv:addr() }))
    -- the unix path came back whole through the escaping
    assert.equal(0, find(m, "lb_backend_ready",
                         { balancer = 'we"ird', backend = odd }))
    -- IPv6 and the same address at two weights are distinct series
    assert.is_number(find(m, "lb_backend_ready",
                          { balancer = "app", backend = "[::1]:9" }))
    assert.is_number(find(m, "lb_backend_weight",
                          { balancer = "app", backend = closed .. " weight=3" }))

    -- counters never decrease from one scrape to the next
    assert(app:run_health_check())
    local m2 = parse(lb.metrics({ app = app, ['we"ird'] = odd_b }))
    for _, s in ipairs(m.samples) do
      local f = m.families[family_of(m, s.name)]
      if f.type == "counter" or f.type == "histogram" then
        local v2 = find(m2, s.name, s.labels)
        assert.is_true(v2 >= s.value, s.name)
      end
    end
    assert.equal(2, find(m2, "lb_health_check_duration_seconds_count",
                         { balancer = "app", backend = srv:addr() }))
    -- one balancer alone, its default name
    assert.truthy(app:metrics():find('lb_backends{balancer="default"} 4', 1,
                                     true))
    assert.truthy(app:metrics("x"):find('lb_backends{balancer="x"}', 1, true))
  end)

  it("counts discovery runs and says what a status row holds", function()
    local fail = false
    local b = h.new({ discovery = function()
      if fail then error("source down") end
      return { "127.0.0.1:1" }
    end })
    assert.is_true(b:update())
    fail = true
    assert.is_nil(b:update())
    local m = parse(b:metrics("d"))
    assert.equal(1, find(m, "lb_discovery_updates_total", { balancer = "d" }))
    assert.equal(1, find(m, "lb_discovery_errors_total", { balancer = "d" }))
    local row = b:status()[1]
    assert.is_false(row.checked) -- never checked: not "healthy" by a check
    assert.is_nil(row.last_check)
    assert.equal(0, row.selected)
    local t0 = os.time()
    b = h.new({ backends = { "127.0.0.1:1" },
                health_check = function() return true end })
    assert(b:run_health_check())
    row = b:status()[1]
    assert.is_true(row.checked)
    assert.is_true(math.abs(row.last_check - t0) < 5)
    assert.has_error(function() lb.metrics({ x = {} }) end,
                     "bad argument #1 to 'metrics' (value of x is not a balancer)")
  end)

  it("names the set of the moment after the set or the name changed",
     function()
    local set = { "127.0.0.1:1", "127.0.0.1:2" }
    local b = h.new({ discovery = function() return set end })
    assert.is_true(b:update())
    local m = parse(lb.metrics({ a = b }))
    assert.equal(2, find(m, "lb_backends", { balancer = "a" }))
    assert.equal(1, find(m, "lb_backend_weight",
                         { balancer = "a", backend = "127.0.0.1:2" }))
    -- a new set: one address gone, one added, one at two weights
    set = { "127.0.0.1:1", { addr = "127.0.0.1:1", weight = 4 },
            "127.0.0.1:3" }
    assert.is_true(b:update())
    local text = lb.metrics({ a = b })
    m = parse(text)
    assert.equal(3, find(m, "lb_backends", { balancer = "a" }))
    assert.is_nil(text:find("127.0.0.1:2", 1, true))
    assert.equal(4, find(m, "lb_backend_weight",
                         { balancer = "a", backend = "127.0.0.1:1 weight=4" }))
    assert.equal(0, find(m, "lb_health_check_duration_seconds_bucket",
                         { balancer = "a", backend = "127.0.0.1:3",
                           le = "+Inf" })) -- never checked
    -- the same balancer under another name
    text = lb.metrics({ c = b })
    assert.is_nil(text:find('balancer="a"', 1, true))
    m = parse(text)
    assert.equal(3, find(m, "lb_backends", { balancer = "c" }))
    assert.equal(1, find(m, "lb_backend_weight",
                         { balancer = "c", backend = "127.0.0.1:3" }))
  end)

  it("renders a status page that names every backend", function()
    local b = h.new({ backends = { srv:addr(), "127.0.0.1:1", '10.9.9.9:80' },
                      health_check = lb.health.tcp({ timeout = 0.5 }) })
    assert(b:run_health_check())
    b:set_enable("10.9.9.9:80", false)
    local html = require("lb.status_page").render({ ["<app>"] = b },
                                                  { refresh = 5 })
    assert.truthy(html:find("<!DOCTYPE html>", 1, true))
    assert.truthy(html:find("&lt;app&gt;", 1, true)) -- escaped
    assert.truthy(html:find('http-equiv="refresh" content="5"', 1, true))
    assert.truthy(html:find('<tr class="up"><td>' .. srv:addr(), 1, true))
    assert.truthy(html:find('<tr class="down"><td>127.0.0.1:1', 1, true))
    assert.truthy(html:find('<tr class="off"><td>10.9.9.9:80', 1, true))
    assert.truthy(html:find("connect: Connection refused", 1, true))
    assert.is_nil(html:find("http://", 1, true)) -- no external asset
    assert.is_nil(html:find("<script", 1, true))
  end)
end)
