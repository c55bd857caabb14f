-- TLS checks (lb.health.tcp{tls} and lb.health.http{tls}) against
-- `openssl s_server` with a self-signed certificate made here for
-- localhost and 127.0.0.1.
local lb = require("lb")
local h = require("helpers")
local nginx = require("support.nginx")
local servers = require("support.servers")

local function status_of(addr, check)
  local b = h.new({ backends = { addr }, health_check = check })
  b:run_health_check()
  local r = b:status()[1]
  return r.healthy, r.last_error
end

describe("TLS checks", function()
  local dir, cert, key, tls, named, plain

  setup(function()
    dir, cert, key = servers.make_cert()
    tls = servers.tls(cert, key)
    -- refuses a client whose SNI is not "localhost" (fatal alert)
    named = servers.tls(cert, key, { servername = "localhost" })
    plain = servers.start("silent")
  end)

  teardown(function()
    servers.stop_all()
    if dir then
      nginx.rmtree(dir)
    end
  end)

  for _, kind in ipairs({ "tcp", "http" }) do
    local make = lb.health[kind]
    describe("lb.health." .. kind, function()
      it("completes a handshake with tls = true (no verification)", function()
        assert.same({ true }, { status_of(tls.addr, make({ tls = true })) })
      end)

      it("verifies the chain against the ca file and the SNI name", function()
        assert.same({ true }, { status_of(tls.addr, make({
          tls = { sni = "localhost", verify = true, ca = cert } })) })
      end)

      it("verifies an IP address backend against its IP SAN", function()
        assert.same({ true }, { status_of(tls.addr, make({
          tls = { verify = true, ca = cert } })) })
      end)

      it("fails verification without the ca (system roots)", function()
        assert.same({ false, "TLS verify: self-signed certificate" },
                    { status_of(tls.addr, make({
                      tls = { sni = "localhost", verify = true } })) })
      end)

      it("fails verification for another name", function()
        local ok, err = status_of(tls.addr, make({
          tls = { sni = "other.example", verify = true, ca = cert } }))
        assert.is_false(ok)
        assert.matches("^TLS verify: ", err)
      end)

      it("does not verify when verify is false", function()
        assert.same({ true }, { status_of(tls.addr, make({
          tls = { sni = "other.example", verify = false } })) })
      end)

      it("sends the SNI name", function()
        assert.same({ true }, { status_of(named.addr, make({
          tls = { sni = "localhost" } })) })
        assert.same({ false, "TLS handshake: tlsv1 unrecognized name" },
                    { status_of(named.addr, make({
                      tls = { sni = "wrong.example" } })) })
      end)

      it("times out the handshake with a server that does not speak TLS",
         function()
        local t0 = lb.now()
        assert.same({ false, "timeout: TLS handshake" },
                    { status_of(plain:addr(), make({ tls = true,
                                                      timeout = 0.3 })) })
        assert.is_true(lb.now() - t0 < 1.5)
      end)

      it("reports a closed port as a connect error", function()
        local closed = "127.0.0.1:" .. assert(nginx.free_port())
        assert.same({ false, "connect: Connection refused" },
                    { status_of(closed, make({ tls = true })) })
      end)
    end)
  end

  it("takes the SNI name from the Host header when sni is not given",
     function()
    assert.same({ true }, { status_of(named.addr, lb.health.http({
      host = "localhost", tls = { verify = true, ca = cert } })) })
  end)

  it("checks HTTPS with the port override", function()
    local closed = "127.0.0.1:" .. assert(nginx.free_port())
    assert.same({ true }, { status_of(closed, lb.health.http({
      port = tls.port, tls = { sni = "localhost", verify = true, ca = cert } })) })
  end)

  it("refuses a ca file that cannot be loaded in lb.new", function()
    local b, err = lb.new({ backends = { tls.addr }, health_check =
      lb.health.tcp({ tls = { verify = true, ca = dir .. "/missing.pem" } }) })
    assert.is_nil(b)
    assert.matches("^lb.new: health_check: ", err)
  end)
end)
