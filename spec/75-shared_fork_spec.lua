-- Shared balancers in plain LuaJIT: a balancer made with `shared` before
-- fork() is one balancer for every child.  Four children start() it and
-- poll(); each writes what it sees to its own file (role, readiness,
-- flips it was told of, picks).  Shown: one prober (each backend gets one
-- probe per period, not one per child), a flip seen by every child and
-- told once, set_enable in one process seen by all, a discovered set
-- adopted by all (the same key goes to the same backend everywhere), and
-- takeover when the prober is killed.  Children are killed by pid at the
-- end, also when the spec fails.
local lb = require("lb")
local h = require("helpers")
local nginx = require("support.nginx")
local servers = require("support.servers")

local fork = require("support.fork")
local SIGKILL = fork.SIGKILL

-- true when the child ended by the deadline (killed by pid otherwise)
local function reap(pid, timeout)
  local code, why = fork.reap(pid, timeout)
  return code ~= nil or why ~= "killed"
end

local PERIOD, TIMEOUT = 0.25, 0.5
local NCHILD = 4

describe("shared balancer", function()
  it("is a reader until it steps, with its capacity a bound", function()
    local b = h.new({ backends = { "127.0.0.1:1", "127.0.0.1:2" },
                      shared = { capacity = 2 },
                      discovery = function()
                        return { "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3" }
                      end })
    assert.equal("reader", b:role())
    local ok, err = b:update()
    assert.is_nil(ok)
    assert.matches("capacity 2", err)
    assert.equal(2, #b:backends())
    assert.equal("private", h.new({ backends = {} }):role())
    local nb, e = lb.new({ shared = { capacity = 0 } })
    assert.is_nil(nb)
    assert.matches("shared.capacity must be an integer between 1 and 65535",
                   e)
    nb, e = lb.new({ shared = "yes" })
    assert.is_nil(nb)
    assert.matches("shared must be true or a table", e)
    nb, e = lb.new({ shared = { size = 3 } })
    assert.is_nil(nb)
    assert.matches("shared: unknown option 'size'", e)
    assert.equal(0, b:status()[1].in_flight)
  end)
end)

describe("shared balancer across fork", function()
  local probe, flip, dir, pids
  setup(function()
    probe = servers.start("http", { count = 4 })
    flip = servers.start("http", { switchable = true })
    dir = assert(nginx.mkdtemp("lb-shared"))
  end)
  teardown(function()
    for k = 1, NCHILD do
      if pids and pids[k] then
        reap(pids[k], 0)
      end
    end
    probe:stop()
    flip:stop()
    nginx.rmtree(dir)
  end)

  local function state(k)
    local s = nginx.read_file(dir .. "/state" .. k)
    local f = s and loadstring(s)
    local ok, t = pcall(f or error)
    return ok and t or nil
  end

  local function states(alive)
    local out = {}
    for k = 1, NCHILD do
      if alive[k] then
        local t = state(k)
        if not t then
          return nil
        end
        out[k] = t
      end
    end
    return out
  end

  local function all(alive, pred)
    local st = states(alive)
    if not st then
      return false
    end
    for k in pairs(alive) do
      if not pred(st[k]) then
        return false
      end
    end
    return st
  end

  local function count_role(st, role)
    local n = 0
    for _, t in pairs(st) do
      n = n + (t.role == role and 1 or 0)
    end
    return n
  end

  it("one prober, shared flips, one set, takeover", function()
    local flip_addr = flip:addr()
    local set_file = dir .. "/set"
    local keyed = { "127.0.0.2:81", "127.0.0.3:82", "127.0.0.4:83" }
    nginx.write_file(set_file, table.concat(keyed, "\n"))
    local told = dir .. "/told"
    local b = h.new({
      backends = { probe:addr(1), probe:addr(2), probe:addr(3), probe:addr(4),
                   flip_addr },
      shared = { capacity = 64 },
      health_check = lb.health.http({ timeout = TIMEOUT }),
      health_check_frequency = PERIOD,
      on_health_change = function(be, healthy)
        local f = io.open(told, "a")
        f:write(be.addr, " ", tostring(healthy), "\n")
        f:close()
      end,
    })
    -- discovery: the file's lines, read by the prober only
    local d = h.new({
      backends = { keyed[1] },
      shared = true,
      selection = "consistent",
      discovery = function()
        local list = {}
        for l in (nginx.read_file(set_file) or ""):gmatch("[^\n]+") do
          list[#list + 1] = l
        end
        return list
      end,
      update_frequency = PERIOD,
    })
    -- a custom (Lua) check: run by the prober only, its error text the
    -- same in every process's status()
    local calls = dir .. "/calls"
    local cb = h.new({
      backends = { "127.0.0.7:7" },
      shared = true,
      health_check = function()
        local f = io.open(calls, "a")
        f:write("x\n")
        f:close()
        return nil, "boom 42"
      end,
      health_check_frequency = PERIOD,
    })
    assert.equal("reader", b:role())

    pids = {}
    for k = 1, NCHILD do
      local pid = fork.fork()
      assert.is_true(pid >= 0)
      if pid == 0 then
        local ok = pcall(function()
          assert(b:start())
          assert(d:start())
          assert(cb:start())
          local t_end = lb.now() + 60
          while lb.now() < t_end do
            b:poll()
            d:poll()
            cb:poll()
            local ready, picks = {}, {}
            for _, be in ipairs(b:backends()) do
              ready[#ready + 1] = string.format("[%q]=%s", be.addr,
                                                tostring(b:ready(be)))
            end
            for i = 1, 200 do
              local be = d:select("key" .. i)
              picks[i] = be and be.addr or "nil"
            end
            local tmp = dir .. "/state" .. k .. ".tmp"
            nginx.write_file(tmp, string.format(
              "return { role = %q, drole = %q, ready = { %s }, picks = %q, "
              .. "n = %d }", b:role(), d:role(), table.concat(ready, ","),
              table.concat(picks, ","), #d:backends()))
            os.rename(tmp, dir .. "/state" .. k)
            require("socket").sleep(0.02)
          end
        end)
        fork.exit(ok and 0 or 1)
      end
      pids[k] = pid
    end
    local alive = {}
    for k = 1, NCHILD do
      alive[k] = true
    end

    -- exactly one prober for each balancer
    local st = h.wait_for(function()
      local s = states(alive)
      return s and count_role(s, "prober") == 1 and s
    end, 10)
    assert.truthy(st, "no single prober")

    -- one probe per backend per period, not one per child
    local c0, t0 = probe:count("req", probe.ports[1]), lb.now()
    require("socket").sleep(3)
    local rate = (probe:count("req", probe.ports[1]) - c0) / (lb.now() - t0)
    print(string.format("# probes per period per backend: %.2f (%d children)",
                        rate * PERIOD, NCHILD))
    assert.is_true(rate * PERIOD >= 0.8 and rate * PERIOD <= 1.25,
                   "probes per period " .. rate * PERIOD)
    st = states(alive)
    assert.equal(1, count_role(st, "prober"))

    -- the custom check ran once per period, not once per child, and its
    -- error reads the same here (a process that never ran it)
    local n0 = #(nginx.read_file(calls) or "")
    require("socket").sleep(2)
    local per = (#(nginx.read_file(calls) or "") - n0) / 2 / (2 / PERIOD)
    print(string.format("# custom checks per period: %.2f (%d children)",
                        per, NCHILD))
    assert.is_true(per >= 0.6 and per <= 1.25, "custom checks per period "
                                               .. per)
    assert.equal("boom 42", cb:status()[1].last_error)
    assert.is_false(cb:status()[1].healthy)

    -- a flip: every child sees it within period + timeout + 0.5 s, and
    -- on_health_change is called once, in the prober
    local ready_key = string.format("%s", flip_addr)
    flip:set_status(503)
    t0 = lb.now()
    assert.truthy(h.wait_for(function()
      return all(alive, function(t) return t.ready[ready_key] == false end)
    end, PERIOD + TIMEOUT + 0.5 + 2))
    local took = lb.now() - t0
    print(string.format("# down in every child after %.2f s", took))
    assert.is_true(took <= PERIOD + TIMEOUT + 0.5, "took " .. took)
    flip:set_status(200)
    t0 = lb.now()
    assert.truthy(h.wait_for(function()
      return all(alive, function(t) return t.ready[ready_key] == true end)
    end, 5))
    took = lb.now() - t0
    print(string.format("# up in every child after %.2f s", took))
    assert.is_true(took <= PERIOD + TIMEOUT + 0.5, "took " .. took)
    assert.truthy(h.wait_for(function()
      local s = nginx.read_file(told) or ""
      return select(2, s:gsub("\n", "")) >= 2
    end, 2))
    assert.equal(flip_addr .. " false\n" .. flip_addr .. " true\n",
                 nginx.read_file(told))

    -- set_enable in this process (never started): every child stops
    -- picking it at once
    assert.is_true(b:set_enable(probe:addr(2), false))
    assert.truthy(h.wait_for(function()
      return all(alive, function(t) return t.ready[probe:addr(2)] == false end)
    end, 2))
    assert.is_true(b:set_enable(probe:addr(2), true))

    -- a discovered set: adopted by every child within a second, the same
    -- key going to the same backend in each
    local private = h.new({ backends = keyed, selection = "consistent" })
    local want = {}
    for i = 1, 200 do
      want[i] = private:select("key" .. i).addr
    end
    assert.truthy(h.wait_for(function()
      return all(alive, function(t) return t.picks == table.concat(want, ",") end)
    end, 5))
    keyed[#keyed + 1] = "127.0.0.5:84"
    nginx.write_file(set_file, table.concat(keyed, "\n"))
    private = h.new({ backends = keyed, selection = "consistent" })
    for i = 1, 200 do
      want[i] = private:select("key" .. i).addr
    end
    -- the prober reads it at its next update, the others adopt it
    t0 = lb.now()
    assert.truthy(h.wait_for(function()
      return all(alive, function(t) return t.picks == table.concat(want, ",") end)
    end, PERIOD + 1 + 2))
    took = lb.now() - t0
    print(string.format("# new set in every child after %.2f s", took))
    assert.is_true(took <= PERIOD + 1, "took " .. took)

    -- kill -9 the prober: one other child takes over within two periods
    -- plus the timeout, and checks go on
    st = states(alive)
    local victim
    for k, t in pairs(st) do
      if t.role == "prober" then
        victim = k
      end
    end
    assert.is_not_nil(victim)
    fork.kill(pids[victim], SIGKILL)
    reap(pids[victim], 5)
    pids[victim] = nil
    alive[victim] = nil
    t0 = lb.now()
    os.remove(dir .. "/state" .. victim)
    assert.truthy(h.wait_for(function()
      local s = states(alive)
      return s and count_role(s, "prober") == 1
    end, 2 * PERIOD + TIMEOUT + 2))
    took = lb.now() - t0
    print(string.format("# a new prober after %.2f s", took))
    assert.is_true(took <= 2 * PERIOD + TIMEOUT, "took " .. took)
    c0 = probe:count("req", probe.ports[1])
    assert.truthy(h.wait_for(function()
      return probe:count("req", probe.ports[1]) >= c0 + 2
    end, 2 * PERIOD + TIMEOUT + 1))
    -- the dead child's process entry is swept: 3 left
    assert.truthy(h.wait_for(function()
      return tonumber(require("lb.cdef").C.lb_balancer_shared_processes(b._c)) == NCHILD - 1
    end, 2))
  end)
end)
