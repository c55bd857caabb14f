-- Built-in checks (TCP, HTTP, TLS) on the C core's checker thread:
-- configuration, rounds, periodic checks, and delivery of the flips the
-- thread queued to on_health_change on the Lua thread.

local ffi = require("ffi")
local core = require("lb.cdef")

local C = core.C
local ffi_new, ffi_string = ffi.new, ffi.string
local tonumber, ipairs = tonumber, ipairs

local errbuf = ffi_new("const char *[1]")
local EVENTS = 64
local events = ffi_new("lb_health_event[?]", EVENTS)
local textbuf = ffi_new("char[256]")

-- Once: a frequency so long that the first round is the only one in
-- practice.  It is the longest lb_balancer_checks_start accepts (1e6 s,
-- about 11.5 days); anything longer is refused as out of range.
local ONCE = 1e6

local function set_str(cfg, field, s, anchors)
  if s ~= nil then
    anchors[#anchors + 1] = s
    cfg[field] = s
    cfg[field .. "_len"] = #s
  end
end

-- A C call's int result as Lua's true | nil, err.
local function outcome(rc)
  if rc == core.ERROR then
    return nil, ffi_string(errbuf[0])
  end
  return true
end

return function(lb, Balancer)
  -- Give the C core the validated check (see lb.health.validate).
  function Balancer:_setup_builtin_check(check)
    local cfg = ffi_new("lb_check_config")
    local anchors = {}
    cfg.kind = core.CHECK_KIND[check.kind]
    cfg.timeout = check.timeout
    cfg.consecutive_success = check.consecutive_success
    cfg.consecutive_failure = check.consecutive_failure
    if check.tls then
      cfg.tls = 1
      cfg.tls_verify = check.tls.verify and 1 or 0
      set_str(cfg, "tls_sni", check.tls.sni, anchors)
      set_str(cfg, "tls_ca", check.tls.ca, anchors)
    end
    if check.kind == "http" then
      set_str(cfg, "method", check.method, anchors)
      set_str(cfg, "path", check.path, anchors)
      set_str(cfg, "host", check.host, anchors)
      local nh = #check.headers
      if nh > 0 then
        local hs = ffi_new("lb_check_header[?]", nh)
        anchors[#anchors + 1] = hs
        for i, kv in ipairs(check.headers) do
          hs[i - 1].name, hs[i - 1].name_len = kv[1], #kv[1]
          hs[i - 1].value, hs[i - 1].value_len = kv[2], #kv[2]
        end
        cfg.headers, cfg.nheaders = hs, nh
      end
      local ne = #check.expected_status
      local es = ffi_new("uint16_t[?]", ne)
      anchors[#anchors + 1] = es
      for i, s in ipairs(check.expected_status) do
        es[i - 1] = s
      end
      cfg.expected_status, cfg.nexpected = es, ne
      cfg.reuse_connection = check.reuse_connection and 1 or 0
      cfg.port = check.port or 0
    end
    local rc = C.lb_balancer_set_check(self._c, cfg, errbuf)
    -- Referenced after the call so the strings outlive it; the C core
    -- copied what it keeps.
    self._check_anchors = anchors
    return outcome(rc)
  end

  function Balancer:_builtin_round(parallel)
    return outcome(C.lb_balancer_check_round(self._c, parallel and 1 or 0,
                                             errbuf))
  end

  function Balancer:_builtin_start()
    return outcome(C.lb_balancer_checks_start(
      self._c, self.health_check_frequency or ONCE,
      self.parallel_health_check and 1 or 0, errbuf))
  end

  function Balancer:_builtin_stop()
    C.lb_balancer_checks_stop(self._c)
  end

  function Balancer._builtin_error_text(_, kind, detail)
    local n = C.lb_check_error_text(kind, detail, textbuf, 256)
    return ffi_string(textbuf, n < 256 and n or 255)
  end

  -- Deliver the flips queued by the checker thread, oldest first.  A flip
  -- of a backend that has left the set since is dropped.
  function Balancer:_drain_events()
    if not self._check or self._check.kind == "custom" then
      return
    end
    local c = self._c
    while true do
      local n = C.lb_balancer_events(c, events, EVENTS)
      for i = 0, n - 1 do
        local e = events[i]
        local b = self._byid[tonumber(e.id)]
        if b then
          local healthy = e.healthy ~= 0
          local err
          if not healthy then
            err = self:_builtin_error_text(e.err_kind, e.err_detail)
          end
          self:_notify(b, healthy, err)
        end
      end
      if n < EVENTS then
        return
      end
    end
  end

  return lb
end
