-- Shared balancers in real nginx, 4 workers: one prober for the host
-- (each backend gets one probe per period, not one per worker), a backend
-- that stops is not ready in every worker within period + timeout + 0.5 s
-- and is back as fast, kill -9 of the prober hands the checks to another
-- worker within two periods plus the timeout, set_enable through one
-- worker is seen by all, and a discovered set is the same in every worker
-- within a second (200 keys hash to the same backend in each).
--
-- Each worker writes its view (role, readiness, picks) into a shared dict
-- every 50 ms; the spec reads all views through any worker.
local nginx = require("support.nginx")
local front = require("support.front")
local servers = require("support.servers")
local lb = require("lb")

local PERIOD, TIMEOUT = 0.5, 0.5
local WORKERS = 4

describe("nginx: shared balancer, 4 workers", function()
  local probes, stopper, srv, dir
  setup(function()
    probes = servers.start("http", { count = 20 })
    stopper = servers.start("http")
    dir = assert(nginx.mkdtemp("lb-shared-nginx"))
    os.execute("chmod 755 " .. nginx.q(dir)) -- the workers read the set
  end)
  teardown(function()
    if srv then srv:stop() end
    nginx.stop_all()
    probes:stop()
    if stopper then stopper:stop() end
    servers.stop_all()
    nginx.rmtree(dir)
  end)

  local function views()
    -- short: a request may land on a worker stopped by the test
    local r = nginx.get(srv.addr, "/views", { timeout = 1 })
    if not r or r.status ~= 200 then
      return nil
    end
    local f = loadstring(r.body)
    local ok, t = pcall(f or error)
    if not ok then
      return nil
    end
    -- only the workers alive now (a killed one's view stays in the dict)
    local live = {}
    for _, pid in ipairs(srv:workers()) do
      live[tostring(pid)] = true
    end
    local out, n = {}, 0
    for pid, v in pairs(t) do
      if live[pid] and lb.now() - v.at < 1 then
        out[pid], n = v, n + 1
      end
    end
    return out, n
  end

  local function every(pred)
    local v, n = views()
    if not v or n ~= WORKERS then
      return false
    end
    for _, w in pairs(v) do
      if not pred(w) then
        return false
      end
    end
    return v
  end

  local function probers(v)
    local n = 0
    for _, w in pairs(v) do
      n = n + (w.role == "prober" and 1 or 0)
    end
    return n
  end

  it("one prober, shared health and enablement, one set", function()
    local backends = {}
    for i = 1, 20 do
      backends[i] = probes:addr(i)
    end
    local stop_addr = stopper:addr()
    local stop_port = stopper.ports[1]
    backends[21] = stop_addr
    local set_file = dir .. "/set"
    local keyed = { "127.0.0.2:81", "127.0.0.3:82", "127.0.0.4:83" }
    nginx.write_file(set_file, table.concat(keyed, "\n"))
    srv = assert(front.start({
      workers = WORKERS,
      http_extra = "lua_shared_dict lb_views 1m;",
      init = ([[
        local lb = require("lb")
        app = assert(lb.new({
          backends = %s,
          shared = true,
          health_check = lb.health.http({ timeout = %s }),
          health_check_frequency = %s,
        }))
        disc = assert(lb.new({
          backends = { "127.0.0.9:9" },
          shared = true,
          selection = "consistent",
          discovery = function()
            local f = io.open(%q)
            local s = f and f:read("*a") or ""
            if f then f:close() end
            local list = {}
            for l in s:gmatch("[^\n]+") do list[#list + 1] = l end
            return list
          end,
          update_frequency = %s,
        }))
      ]]):format(front.lua_list(backends), TIMEOUT, PERIOD, set_file, PERIOD),
      init_worker = [=[
        assert(app:start())
        assert(disc:start())
        local last_role, since
        ngx.timer.every(0.05, function()
          local role = app:role()
          if role ~= last_role then
            last_role, since = role, require("lb").now()
          end
          local ready, picks = {}, {}
          for _, be in ipairs(app:backends()) do
            ready[#ready + 1] = ("[%q]=%s"):format(be.addr,
                                                   tostring(app:ready(be)))
          end
          for i = 1, 200 do
            local be = disc:select("key" .. i)
            picks[i] = be and be.addr or "nil"
          end
          ngx.shared.lb_views:set(tostring(ngx.worker.pid()), ([[
            { role = %q, at = %.3f, since = %.3f, ready = { %s },
              picks = %q } ]]):format(
            role, require("lb").now(), since, table.concat(ready, ","),
            table.concat(picks, ",")))
        end)
      ]=],
      server_extra = [[
        location = /views {
          content_by_lua_block {
            local d = ngx.shared.lb_views
            local out = {}
            for _, k in ipairs(d:get_keys(0)) do
              out[#out + 1] = ("[%q] = %s"):format(k, d:get(k))
            end
            ngx.say("return { ", table.concat(out, ",\n"), " }")
          }
        }
        location = /new_shared {
          content_by_lua_block {
            local b, err = require("lb").new({ backends = {}, shared = true })
            ngx.say(tostring(b), " ", err)
          }
        }
        location = /enable {
          content_by_lua_block {
            local on = ngx.var.arg_on == "1"
            ngx.say(tostring(app:set_enable(ngx.var.arg_addr, on)),
                    " ", ngx.worker.pid())
          }
        }
      ]],
    }))

    -- in a worker, lb.new with shared says where to call it
    local nr = assert(nginx.get(srv.addr, "/new_shared"))
    assert.matches("nil lb.new: a shared balancer is made in init_by_lua",
                   nr.body, 1, true)
    assert.matches("not in the content phase", nr.body, 1, true)

    -- one prober among the 4 workers
    local v = nginx.wait_for(function()
      local x = every(function() return true end)
      return x and probers(x) == 1 and x
    end, 10)
    assert.truthy(v, "no single prober")

    -- one probe per backend per period over 10 s
    local ports = probes.ports
    local c0, t0 = {}, lb.now()
    for i, p in ipairs(ports) do c0[i] = probes:count("req", p) end
    require("socket").sleep(10)
    local dt = lb.now() - t0
    local lo, hi = math.huge, 0
    for i, p in ipairs(ports) do
      local per = (probes:count("req", p) - c0[i]) / (dt / PERIOD)
      lo, hi = math.min(lo, per), math.max(hi, per)
    end
    print(("# probes per backend per period, 20 backends, %d workers: "
           .. "%.2f-%.2f"):format(WORKERS, lo, hi))
    assert.is_true(lo >= 0.8 and hi <= 1.25, ("%.2f-%.2f"):format(lo, hi))

    -- a backend stops: not ready in every worker within period + timeout
    -- + 0.5 s; restarted: ready again as fast
    stopper:stop()
    stopper = nil
    t0 = lb.now()
    assert.truthy(nginx.wait_for(function()
      return every(function(w) return w.ready[stop_addr] == false end)
    end, 10))
    local took = lb.now() - t0
    print(("# stopped backend down in every worker after %.2f s"):format(took))
    assert.is_true(took <= PERIOD + TIMEOUT + 0.5, "took " .. took)
    stopper = servers.start("http", { port = stop_port })
    t0 = lb.now()
    assert.truthy(nginx.wait_for(function()
      return every(function(w) return w.ready[stop_addr] == true end)
    end, 10))
    took = lb.now() - t0
    print(("# restarted backend up in every worker after %.2f s"):format(took))
    assert.is_true(took <= PERIOD + TIMEOUT + 0.5, "took " .. took)

    -- set_enable through one worker: every worker stops picking it
    local r, rerr = nginx.get(srv.addr, "/enable?on=0&addr=" .. backends[3])
    assert(r, tostring(rerr) .. "\n" .. tostring(srv:error_log()))
    assert.truthy(r.body:match("^true"))
    assert.truthy(nginx.wait_for(function()
      return every(function(w) return w.ready[backends[3]] == false end)
    end, 2))
    assert(nginx.get(srv.addr, "/enable?on=1&addr=" .. backends[3]))

    -- a discovered set, the same in every worker within 1 s
    local function expected(list)
      local p = assert(lb.new({ backends = list, selection = "consistent" }))
      local out = {}
      for i = 1, 200 do out[i] = p:select("key" .. i).addr end
      return table.concat(out, ",")
    end
    local ok_set = nginx.wait_for(function()
      return every(function(w) return w.picks == expected(keyed) end)
    end, 5)
    assert.truthy(ok_set)
    keyed[#keyed + 1] = "127.0.0.5:84"
    nginx.write_file(set_file, table.concat(keyed, "\n"))
    local want = expected(keyed)
    t0 = lb.now()
    assert.truthy(nginx.wait_for(function()
      return every(function(w) return w.picks == want end)
    end, 5))
    took = lb.now() - t0
    print(("# new set in every worker after %.2f s (update every %.1f s)")
          :format(took, PERIOD))
    assert.is_true(took <= PERIOD + 1, "took " .. took)

    -- kill -9 the prober: another worker probes within 2 periods + timeout
    v = assert(every(function() return true end))
    local victim
    for pid, w in pairs(v) do
      if w.role == "prober" then victim = tonumber(pid) end
    end
    assert.is_not_nil(victim)
    nginx.kill(victim, "KILL")
    t0 = lb.now()
    local c1 = probes:count("req", ports[1])
    assert.truthy(nginx.wait_for(function()
      local x = views()
      if not x then return false end
      for pid, w in pairs(x) do
        if tonumber(pid) ~= victim and w.role == "prober" then
          return true
        end
      end
      return false
    end, 2 * PERIOD + TIMEOUT + 3))
    took = lb.now() - t0
    print(("# a new prober %.2f s after kill -9"):format(took))
    assert.is_true(took <= 2 * PERIOD + TIMEOUT, "took " .. took)
    assert.truthy(nginx.wait_for(function()
      return probes:count("req", ports[1]) > c1
    end, 2 * PERIOD + TIMEOUT + 1))
    -- and exactly one, with the respawned worker among the readers
    assert.truthy(nginx.wait_for(function()
      local x = every(function() return true end)
      return x and probers(x) == 1
    end, 5))
    -- a stuck prober (SIGSTOP: it stops renewing its turn): another
    -- worker takes over within two periods plus the timeout; resumed, the
    -- stuck one finds itself a reader
    v = assert(every(function() return true end))
    local stuck
    for pid, w in pairs(v) do
      if w.role == "prober" then stuck = tonumber(pid) end
    end
    nginx.kill(stuck, "STOP")
    local resumed = false
    finally(function() if not resumed then nginx.kill(stuck, "CONT") end end)
    t0 = lb.now()
    local since = nginx.wait_for(function()
      local x = views()
      for pid, w in pairs(x or {}) do
        if tonumber(pid) ~= stuck and w.role == "prober" then return w.since end
      end
      return false
    end, 2 * PERIOD + TIMEOUT + 5)
    assert.truthy(since)
    took = since - t0 -- when that worker saw itself become the prober
    print(("# a new prober %.2f s after the prober stopped"):format(took))
    assert.is_true(took <= 2 * PERIOD + TIMEOUT, "took " .. took)
    nginx.kill(stuck, "CONT")
    resumed = true
    assert.truthy(nginx.wait_for(function()
      local x = every(function() return true end)
      return x and probers(x) == 1 and x[tostring(stuck)].role == "reader"
    end, 5))

    -- nothing failed in the meantime
    local res = front.get(srv, 200)
    local _, _, bad = front.count(res)
    assert.equal(0, bad)
  end)
end)
