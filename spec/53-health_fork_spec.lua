-- A balancer made before fork() works in both processes: each selects,
-- runs rounds, and runs its own background checker, whose flips it sees
-- on its own.  The child reports through a file and leaves with _exit; a
-- child that hangs is killed by its pid at a deadline.
local lb = require("lb")
local h = require("helpers")
local nginx = require("support.nginx")
local servers = require("support.servers")

local fork = require("support.fork")
local reap = fork.reap

describe("fork", function()
  local srv, ok200
  setup(function()
    ok200 = servers.start("http")
    srv = servers.start("http", { switchable = true })
  end)
  teardown(function()
    srv:stop()
    ok200:stop()
  end)

  it("a balancer made before fork works in both processes", function()
    local live, flipping = ok200:addr(), srv:addr()
    local closed = "127.0.0.1:" .. assert(nginx.free_port())
    local flips1, flips2 = {}, {}
    local function recorder(list)
      return function(be, healthy, err)
        list[#list + 1] = be.addr .. " " .. tostring(healthy) .. " "
                          .. tostring(err)
      end
    end
    -- b1: rounds on demand; b2: periodic checks, running at the fork
    local b1 = h.new({ backends = { live, closed }, selection = "round_robin",
                       health_check = lb.health.http({ timeout = 1 }),
                       on_health_change = recorder(flips1) })
    local b2 = h.new({ backends = { flipping },
                       health_check = lb.health.http({ timeout = 1 }),
                       health_check_frequency = 0.05,
                       on_health_change = recorder(flips2) })
    assert.is_not_nil(b1:select())
    assert.is_true(b2:start())
    assert.truthy(nginx.wait_for(function() return srv:count("req") >= 2 end, 5))
    assert.equal(1, servers.thread_names()["lb-checker"])

    -- Each process: a round on b1 flips `closed` down (its own callback,
    -- once); select then only returns `live`; b2's checker sees the 503
    -- written after the fork and poll() delivers that flip.
    local function work()
      local out = {}
      assert(b1:run_health_check())
      out[#out + 1] = "b1 flips: " .. table.concat(flips1, ",")
      local picks = {}
      for _ = 1, 4 do
        local be = b1:select()
        picks[#picks + 1] = be and be.addr or "nil"
      end
      out[#out + 1] = "picks: " .. table.concat(picks, ",")
      local seen = h.wait_for(function() return #flips2 >= 1 end, 10,
                              function() b2:poll() end)
      out[#out + 1] = "b2 flips: " .. (seen and table.concat(flips2, ",")
                                       or "none")
      b2:stop()
      return out
    end

    local result = srv.dir .. "/child"
    local pid = fork.fork()
    assert.is_true(pid >= 0)
    if pid == 0 then
      -- the child: never return into busted
      local code = 1
      local ok, res = pcall(work)
      local f = io.open(result, "wb")
      if f then
        f:write(ok and table.concat(res, "\n") or ("error: " .. tostring(res)),
                "\n")
        f:close()
        code = ok and 0 or 1
      end
      fork.exit(code)
    end

    local killed = true
    finally(function()
      if killed then
        reap(pid, 0)
      end
    end)
    srv:set_status("503")
    local mine = work()
    local code, why = reap(pid, 20)
    killed = false
    assert.equal(0, code, why)

    local expect = {
      "b1 flips: " .. closed .. " false connect: Connection refused",
      "picks: " .. table.concat({ live, live, live, live }, ","),
      "b2 flips: " .. flipping .. " false unexpected status 503",
    }
    assert.same(expect, mine)
    assert.equal(table.concat(expect, "\n") .. "\n", nginx.read_file(result))
    assert.truthy(nginx.wait_for(function()
      return servers.thread_names()["lb-checker"] == nil
    end, 5))
  end)
end)
