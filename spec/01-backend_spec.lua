local lb = require("lb")
local h = require("helpers")

describe("backends", function()
  it("parses IPv4, IPv6 and unix addresses into canonical tables", function()
    local b = h.new({ backends = { "10.0.0.1:80", "[0:0::1]:8080",
                                   "unix:/run/app.sock" } })
    local list = b:backends()
    assert.same({ addr = "10.0.0.1:80", host = "10.0.0.1", port = 80,
                  weight = 1 }, list[1])
    assert.same({ addr = "[::1]:8080", host = "::1", port = 8080,
                  weight = 1 }, list[2])
    assert.same({ addr = "unix:/run/app.sock", host = "/run/app.sock",
                  weight = 1 }, list[3])
    assert.is_nil(list[3].port)
  end)

  it("sorts as Pingora: IPv4 < IPv6 < unix, then bytes, port, weight",
     function()
    local b = h.new({ backends = {
      "unix:/b", "unix:/a", "[::2]:1", "[::1]:9", "10.0.0.2:1",
      { addr = "10.0.0.1:80", weight = 2 }, "10.0.0.1:80", "10.0.0.1:79",
      "9.255.255.255:65535",
    } })
    assert.same({ "9.255.255.255:65535", "10.0.0.1:79", "10.0.0.1:80",
                  "10.0.0.1:80", "10.0.0.2:1", "[::1]:9", "[::2]:1",
                  "unix:/a", "unix:/b" }, h.addrs(b:backends()))
    assert.equal(1, b:backends()[3].weight)
    assert.equal(2, b:backends()[4].weight)
  end)

  it("treats (address, weight) as identity and carries ext", function()
    local b = h.new({ backends = {
      { addr = "10.0.0.1:80", ext = { zone = "a" } },
      { addr = "10.0.0.1:80", ext = { zone = "b" } },
      { addr = "10.0.0.1:80", weight = 3, ext = "w3" },
    } })
    local list = b:backends()
    assert.equal(2, #list)
    assert.same({ zone = "a" }, list[1].ext)
    assert.equal("w3", list[2].ext)
  end)

  it("resolves a host name once, every address becoming a backend",
     function()
    local b = h.new({ backends = { "localhost:8080" } })
    local list = b:backends()
    assert.is_true(#list >= 1)
    local seen = {}
    for _, be in ipairs(list) do
      seen[be.addr] = true
      assert.equal(8080, be.port)
    end
    assert.is_true(seen["127.0.0.1:8080"] or seen["[::1]:8080"] or false)
  end)

  local bad = {
    { "1.2.3:80", "invalid IPv4 address" },
    { "1.2.3.4", "missing port" },
    { "1.2.3.4:0", "port out of range" },
    { "1.2.3.4:65536", "port out of range" },
    { "1.2.3.4:8x", "invalid port" },
    { "::1:80", "brackets" },
    { "[::1]80", "expected [ipv6]:port" },
    { "[::g]:80", "invalid IPv6 address" },
    { "unix:", "empty unix socket path" },
    { "unix:/" .. string.rep("x", 200), "path too long" },
    { "", "empty address" },
    { "bad host!:80", "invalid host name" },
  }
  for _, case in ipairs(bad) do
    it("rejects address '" .. case[1]:sub(1, 20) .. "' naming the entry",
       function()
      local b, err = lb.new({ backends = { "127.0.0.1:1", case[1] } })
      assert.is_nil(b)
      assert.matches("backends%[2%]", err)
      assert.matches(case[2], err, 1, true)
    end)
  end

  local bad_weights = { 0, 1.5, -1, 1001, 2 ^ 53, 0 / 0, "2", true }
  for _, w in ipairs(bad_weights) do
    it("rejects weight " .. tostring(w), function()
      local b, err = lb.new({ backends = { { addr = "127.0.0.1:1",
                                             weight = w } } })
      assert.is_nil(b)
      assert.matches("backends%[1%] %('127.0.0.1:1'%): weight", err)
    end)
  end

  it("accepts weights 1 through 1000", function()
    local b = h.new({ backends = { { addr = "127.0.0.1:1", weight = 1000 },
                                   { addr = "127.0.0.1:2", weight = 1 } },
                      selection = "consistent" })
    assert.equal(1000, b:backends()[1].weight)
  end)

  it("rejects entries that are neither strings nor tables", function()
    local b, err = lb.new({ backends = { "127.0.0.1:1", 42 } })
    assert.is_nil(b)
    assert.matches("backends%[2%]: expected an address string", err)
    b, err = lb.new({ backends = { { weight = 2 } } })
    assert.is_nil(b)
    assert.matches("backends%[1%]: addr must be a string", err)
    b, err = lb.new({ backends = "127.0.0.1:1" })
    assert.is_nil(b)
    assert.matches("backends: expected a list", err)
    b, err = lb.new({ backends = { x = "127.0.0.1:1" } })
    assert.is_nil(b)
    assert.matches("expected a list", err)
  end)
end)
