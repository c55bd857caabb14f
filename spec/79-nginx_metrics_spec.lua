-- Metrics and the status page in real nginx, 2 workers, a shared
-- balancer: every scrape of /metrics gives the same per-backend values
-- whichever worker answers, the selection counters sum to the requests
-- sent, a real Prometheus server scrapes it (its query API returns the
-- series), and headless Chromium renders the status page.
local nginx = require("support.nginx")
local front = require("support.front")

local q = nginx.q

local function which(cmd)
  local p = io.popen("command -v " .. cmd .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out:match("%S+")
end

-- per-backend sample lines of a scrape, without the histogram timings
-- (which move with every check)
local function backend_lines(body)
  local out = {}
  for line in body:gmatch("[^\n]+") do
    if line:match("^lb_backend_") or line:match("^lb_backends") then
      out[#out + 1] = line
    end
  end
  table.sort(out)
  return table.concat(out, "\n")
end

describe("nginx: metrics and status page (2 workers, shared)", function()
  local addrs, srv, dir, prom_pid

  setup(function()
    addrs = nginx.loopback_backends(3)
    dir = assert(nginx.mkdtemp("lb-metrics-nginx"))
    srv = assert(front.start({
      workers = 2,
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({
          backends = %s,
          shared = true,
          health_check = lb.health.tcp({ timeout = 1 }),
          health_check_frequency = 0.5,
        }))
      ]]):format(front.lua_list(addrs)),
      init_worker = "assert(app:start())",
      server_extra = [[
        location = /metrics {
          content_by_lua_block { require("lb.nginx").metrics({ app = app }) }
        }
        location = /status {
          content_by_lua_block {
            require("lb.nginx").status_page({ app = app }, { refresh = 5 })
          }
        }
      ]],
    }))
  end)

  teardown(function()
    if prom_pid then
      nginx.kill(prom_pid, "KILL")
      nginx.wait_exit(prom_pid, 5)
    end
    nginx.stop_all()
    nginx.rmtree(dir)
  end)

  it("gives the same figures from every worker", function()
    local N = 300
    local res = front.get(srv, N)
    local _, by_worker, bad = front.count(res)
    assert.equal(0, bad)
    assert.equal(2, front.size(by_worker))
    -- scrape until both workers answered, twice each with no traffic
    local seen, n = {}, 0
    assert.truthy(nginx.wait_for(function()
      local r = nginx.get(srv.addr, "/metrics")
      if r and r.status == 200 then
        assert.equal("text/plain; version=0.0.4; charset=utf-8",
                     r.headers["content-type"])
        local w = r.headers["x-lb-worker"]
        if not seen[w] then
          seen[w], n = r.body, n + 1
        end
      end
      return n == 2
    end, 10, 0.001))
    local a, b
    for _, body in pairs(seen) do
      if a then b = body else a = body end
    end
    assert.equal(backend_lines(a), backend_lines(b))
    -- the selection counters sum to the requests sent
    local sum = 0
    for v in a:gmatch('lb_backend_selected_total{[^}]*} (%d+)') do
      sum = sum + tonumber(v)
    end
    assert.equal(N, sum)
    local ok = io.popen("promtool check metrics <<'EOF'\n" .. a
                        .. "EOF\necho rc=$?"):read("*a")
    assert.truthy(ok:match("rc=0"), ok)
  end)

  it("is scraped by a real Prometheus server", function()
    local prom = which("prometheus")
    assert(prom, "prometheus is not installed (tools/deps.sh installs it)")
    local port = assert(nginx.free_port())
    local cfg = dir .. "/prometheus.yml"
    nginx.write_file(cfg, ([[
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: lb
    metrics_path: /metrics
    static_configs:
      - targets: ["%s"]
]]):format(srv.addr))
    prom_pid = assert(nginx.spawn(q(prom) .. " --config.file=" .. q(cfg)
      .. " --storage.tsdb.path=" .. q(dir .. "/data")
      .. " --web.listen-address=127.0.0.1:" .. port, dir .. "/prom.log"))
    local body
    local got = nginx.wait_for(function()
      local r = nginx.get("127.0.0.1:" .. port,
                          "/api/v1/query?query=sum(lb_backend_ready)")
      body = r and r.body or ""
      return body:match('"result":%[{"metric":{},"value":%[[%d.]+,"3"%]}%]')
    end, 30, 0.2)
    assert.truthy(got, "no lb series in Prometheus: " .. tostring(body) .. "\n"
                       .. tostring(nginx.read_file(dir .. "/prom.log")))
    local r = assert(nginx.get("127.0.0.1:" .. port,
                               "/api/v1/query?query=up%7Bjob%3D%22lb%22%7D"))
    assert.truthy(r.body:match('"value":%[[%d.]+,"1"%]'), r.body)
    -- lb_backend_ready with its labels, one series per backend
    r = assert(nginx.get("127.0.0.1:" .. port,
                         "/api/v1/query?query=lb_backend_ready"))
    local data = require("cjson").decode(r.body).data.result
    assert.equal(3, #data)
    local by = {}
    for _, e in ipairs(data) do
      assert.equal("app", e.metric.balancer)
      assert.equal("lb", e.metric.job)
      assert.equal("1", e.value[2])
      by[e.metric.backend] = true
    end
    for _, a in ipairs(addrs) do
      assert.is_true(by[a], a)
    end
    nginx.kill(prom_pid, "KILL")
    nginx.wait_exit(prom_pid, 5)
    prom_pid = nil
  end)

  it("renders the status page in headless Chromium", function()
    local chrome = which("chromium")
    assert(chrome, "chromium is not installed (tools/deps.sh installs it)")
    local png = dir .. "/status.png"
    local url = "http://" .. srv.addr .. "/status"
    local cmd = q(chrome) .. " --headless --no-sandbox --disable-gpu"
                .. " --no-first-run --user-data-dir=" .. q(dir .. "/chrome")
                .. " --window-size=1100,500"
    local log = dir .. "/chrome.log"
    local dom = io.popen("timeout 60 " .. cmd .. " --enable-logging=stderr"
                         .. " --dump-dom " .. q(url) .. " 2>" .. q(log))
                  :read("*a")
    -- no console message of the page (it has no script; an error would
    -- be logged as CONSOLE)
    local clog = nginx.read_file(log) or ""
    assert.is_nil(clog:match("CONSOLE[^\n]*"), clog)
    for _, a in ipairs(addrs) do
      assert.truthy(dom:find('<tr class="up"><td>' .. a, 1, true), dom)
    end
    assert.truthy(dom:find("3 of 3 ready", 1, true))
    os.execute("timeout 60 " .. cmd .. " --screenshot=" .. q(png) .. " "
               .. q(url) .. " >/dev/null 2>&1")
    local img = nginx.read_file(png)
    assert.truthy(img and #img > 5000 and img:sub(2, 4) == "PNG",
                  "no screenshot")
    if os.getenv("LB_KEEP_SCREENSHOT") then
      os.execute("cp " .. q(png) .. " " .. q(os.getenv("LB_KEEP_SCREENSHOT")))
    end
  end)
end)
