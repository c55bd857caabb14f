-- In nginx, on_health_change may yield (a cosocket, ngx.sleep): while it
-- waits, the drains of other balancers run in their own timers.  Every
-- flip must still be delivered once, to the right balancer's callback.
local nginx = require("support.nginx")
local front = require("support.front")

local N = 120 -- flips per balancer, more than one batch of a drain

describe("nginx: on_health_change that yields", function()
  teardown(function()
    nginx.stop_all()
  end)

  it("loses no flip while other balancers drain", function()
    local srv = assert(front.start({
      workers = 1,
      init = ([[
        local lb = require("lb")
        local function dead(third)
          local out = {}
          for i = 1, %d do out[i] = ("127.0.%%d.%%d:1"):format(third, i) end
          return out
        end
        local function recorder(name)
          return function(be, healthy)
            ngx.sleep(0.001) -- yields: the other balancers' drains run
            local d = ngx.shared.lb_test
            d:incr(name .. " " .. be.addr .. " " .. tostring(healthy), 1, 0)
            d:incr("total", 1, 0)
          end
        end
        balancers = {}
        for k = 1, 3 do
          balancers[k] = assert(lb.new({
            backends = dead(210 + k),
            health_check = lb.health.tcp({ timeout = 1 }),
            health_check_frequency = 0.2,
            on_health_change = recorder("b" .. k),
          }))
        end
        app = balancers[1]
      ]]):format(N),
      init_worker = "for _, b in ipairs(balancers) do assert(b:start()) end",
      server_extra = [[
        location = /flips {
          content_by_lua_block {
            local d = ngx.shared.lb_test
            local keys = d:get_keys(0)
            local out = {}
            for _, k in ipairs(keys) do
              out[#out + 1] = k .. "=" .. d:get(k)
            end
            table.sort(out)
            ngx.say(table.concat(out, "\n"))
          }
        }
      ]],
    }))
    local body
    local done = nginx.wait_for(function()
      local r = nginx.get(srv.addr, "/flips")
      body = r and r.body or ""
      return tonumber(body:match("total=(%d+)") or 0) >= 3 * N
    end, 20)
    if not done then
      local got = {}
      for name in body:gmatch("(b%d) %S+ %a+=%d+") do got[name] = (got[name] or 0) + 1 end
      error(("not every flip was delivered: %s of %d, per balancer b1=%d b2=%d b3=%d")
            :format(body:match("total=(%d+)") or "0", 3 * N, got.b1 or 0,
                    got.b2 or 0, got.b3 or 0))
    end
    -- exactly one "down" flip per backend per balancer, nothing else
    local per, total = {}, 0
    for name, addr, state, count in body:gmatch("(b%d) (%S+) (%a+)=(%d+)") do
      assert.equal("false", state, addr)
      assert.equal("1", count, name .. " " .. addr)
      per[name] = (per[name] or 0) + 1
      total = total + 1
      assert(addr:match("^127%.0%.21" .. name:sub(2) .. "%."), name .. " got " .. addr)
    end
    assert.same({ b1 = N, b2 = N, b3 = N }, per)
    assert.equal(3 * N, total)
    srv:stop()
  end)
end)
