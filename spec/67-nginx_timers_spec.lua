-- Background work survives timer pressure, in nginx: while the
-- application's own timers hold every lua_max_running_timers slot for
-- longer than two seconds, nginx cannot run lb's timers; once the slots are
-- free again, discovery, custom check rounds and the delivery of health
-- events resume by themselves, without a reload.

local nginx = require("support.nginx")

local PERIOD = 0.2
local SLOTS = 4
local PENDING = 24 -- lua_max_pending_timers

describe("background work under timer pressure (nginx)", function()
  local srv, dead

  setup(function()
    dead = assert(nginx.free_port()) -- nothing listens there
    local port = assert(nginx.free_port())
    srv = assert(nginx.start({
      lua = true,
      http = ([[
{{lua_paths}}
    lua_shared_dict lb_test 1m;
    lua_max_running_timers %d;
    lua_max_pending_timers %d;
    init_by_lua_block {
        local lb = require("lb")
        local dict = ngx.shared.lb_test
        dict:set("backends", "127.0.0.1:%d")
        local function discover()
          local list = {}
          for a in dict:get("backends"):gmatch("[^ ]+") do
            list[#list + 1] = a
          end
          return list
        end
        app = assert(lb.new({
          discovery = discover, update_frequency = %s,
          health_check = lb.health.tcp({ timeout = 0.2 }),
          health_check_frequency = %s,
          on_health_change = function(b, healthy)
            dict:incr("flips:" .. b.addr .. ":" .. tostring(healthy), 1, 0)
          end,
        }))
        checked = assert(lb.new({
          backends = { "127.0.0.1:%d" },
          health_check = function() dict:incr("rounds", 1, 0); return true end,
          health_check_frequency = %s,
        }))
    }
    init_worker_by_lua_block {
        assert(app:start())
        assert(checked:start())
    }
    server {
        listen 127.0.0.1:%d;
        location = /fill {
            content_by_lua_block {
                local dict = ngx.shared.lb_test
                dict:set("release", false)
                -- The application's own timers, holding every slot.
                for _ = 1, %d do
                    assert(ngx.timer.at(0, function()
                        dict:incr("holding", 1, 0)
                        while not dict:get("release") do ngx.sleep(0.05) end
                        dict:incr("holding", -1, 0)
                    end))
                end
                ngx.say("ok")
            }
        }
        location = /fill-pending {
            content_by_lua_block {
                -- The application's own timers, filling every pending
                -- slot for 2.5 s; they then expire and free them.
                local made, refused = 0, 0
                for _ = 1, %d do
                    local ok = ngx.timer.at(2.5, function() end)
                    if ok then made = made + 1 else refused = refused + 1 end
                end
                ngx.say(made, " ", refused)
            }
        }
        location = /release {
            content_by_lua_block {
                ngx.shared.lb_test:set("release", true)
                ngx.say("ok")
            }
        }
        location = /set {
            content_by_lua_block {
                ngx.shared.lb_test:set("backends", ngx.var.arg_list)
                ngx.say("ok")
            }
        }
        location = /state {
            content_by_lua_block {
                local dict = ngx.shared.lb_test
                local addrs = {}
                for _, b in ipairs(app:backends()) do addrs[#addrs + 1] = b.addr end
                ngx.say(table.concat(addrs, " "), "|", dict:get("rounds") or 0,
                        "|", dict:get("holding") or 0)
            }
        }
        location = /flips {
            content_by_lua_block {
                ngx.say(ngx.shared.lb_test:get("flips:" .. ngx.var.arg_addr
                                                .. ":false") or 0)
            }
        }
    }
]]):format(SLOTS, PENDING, dead, PERIOD, PERIOD, dead, PERIOD, port,
         SLOTS, PENDING),
      vars = { lua_paths = nginx.lua_paths() },
      wait = { "127.0.0.1:" .. port },
    }))
    srv.addr = "127.0.0.1:" .. port
  end)

  teardown(function()
    nginx.stop_all()
  end)

  local function get(path)
    local r = assert(nginx.get(srv.addr, path))
    assert.are.equal(200, r.status, r.body)
    return (r.body:gsub("%s+$", ""))
  end

  local function state()
    local set, rounds, holding = get("/state"):match("^(.-)|(%d+)|(%d+)$")
    return set, tonumber(rounds), tonumber(holding)
  end

  it("resumes discovery, checks and health events once timers are free",
     function()
    local first = "127.0.0.1:" .. dead
    -- Running before the pressure: the first flip (nothing listens).
    assert(nginx.wait_for(function()
      return tonumber(get("/flips?addr=" .. first)) >= 1
    end, 5), "no health event before the pressure")

    assert.are.equal("ok", get("/fill"))
    assert(nginx.wait_for(function()
      local _, _, holding = state()
      return holding == SLOTS
    end, 5), "the application's timers did not take every slot")
    local t0 = require("socket").gettime()
    local _, rounds_before = state()
    -- Hold the slots for more than two seconds; nginx cannot run lb's
    -- timers meanwhile (it logs that lua_max_running_timers are not
    -- enough).
    assert(nginx.wait_for(function()
      return require("socket").gettime() - t0 > 2.5
             and srv:error_log():find("lua_max_running_timers are not enough",
                                      1, true)
    end, 10), "lb's timers were never refused a slot")
    local _, rounds_during = state()
    assert.are.equal("ok", get("/release"))
    assert(nginx.wait_for(function()
      local _, _, holding = state()
      return holding == 0
    end, 5))
    local released = require("socket").gettime()

    -- A new set: the discovery must pick it up; its new backend (nothing
    -- listens there either) must flip, and on_health_change hear of it.
    local other = "127.0.0.2:" .. dead
    assert.are.equal("ok", get("/set?list=" .. other))
    local resumed = nginx.wait_for(function()
      local set = state()
      return set == other
    end, 5)
    local took = require("socket").gettime() - released
    assert(resumed, "discovery did not resume after the pressure: set is "
           .. tostring(state()))
    assert(nginx.wait_for(function()
      return tonumber(get("/flips?addr=" .. other)) >= 1
    end, 5), "no health event delivered after the pressure")
    assert(nginx.wait_for(function()
      local _, rounds = state()
      return rounds > rounds_during + 2
    end, 5), "custom check rounds did not resume after the pressure")
    print(("\n  timers: %d custom rounds before the pressure, %d at its end; "
           .. "discovery resumed %.2f s after the release (period %.1f s)")
          :format(rounds_before, rounds_during, took, PERIOD))
  end)
  it("goes on while the application fills every pending timer slot", function()
    local socket = require("socket")
    local before = "127.0.0.3:" .. dead
    assert.are.equal("ok", get("/set?list=" .. before))
    assert(nginx.wait_for(function() return state() == before end, 5))
    local made, refused = get("/fill-pending"):match("^(%d+) (%d+)$")
    assert(tonumber(refused) > 0, "the pending limit was never reached")
    local t0 = socket.gettime()
    -- While every pending slot is taken (2.5 s), a new set is published:
    -- lb's periodic timers re-arm without a new pending slot, so the
    -- discovery picks it up within a period or two, and it still runs once
    -- the application's timers have expired.
    local during = "127.0.0.4:" .. dead
    assert.are.equal("ok", get("/set?list=" .. during))
    local adopted = nginx.wait_for(function() return state() == during end, 6)
    local took = socket.gettime() - t0
    assert(adopted, "discovery stopped under the pending limit: set is "
           .. tostring(state()))
    assert(nginx.wait_for(function() return socket.gettime() - t0 > 3 end, 5))
    local after = "127.0.0.5:" .. dead
    assert.are.equal("ok", get("/set?list=" .. after))
    assert(nginx.wait_for(function() return state() == after end, 5),
           "discovery stopped after the pending limit")
    print(("\n  pending limit: %s application timers made, %s refused; "
           .. "the new set adopted %.2f s later (period %.1f s)")
          :format(made, refused, took, PERIOD))
  end)
end)
