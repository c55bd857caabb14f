-- docs/api.md against the running code: every public name (not starting
-- with `_`) of require("lb"), lb.health, lb.discovery, a balancer's
-- methods, a static discovery's methods, require("lb.nginx") and its
-- peer's methods (read in a real nginx), and every option the code
-- accepts for lb.new, lb.health.* and lb.discovery.dns/etcd must be in
-- the document; every name and option the document gives must exist.
-- The keys of the nested options (passive, slow_start, shared, the tls
-- tables) must be named where their option is documented.
--
-- How docs/api.md writes them (its first lines say so too):
--   lb.new, lb.health.tcp, lb.nginx.new, require("lb.nginx").status
--   balancer:select(...)   static:add(...)   peer:balance()
--   options: rows "| `name` |" of the table in "## lb.new(opts)", of the
--   tables after "lb.discovery.dns({" and "lb.discovery.etcd({", and the
--   fields of the "lb.health.tcp{ ... }" signatures in "## Health checks"

local nginx = require("support.nginx")
local lb = require("lb")
local args = require("lb.args")

local DOC_PATH = "docs/api.md"

local function public(name)
  return type(name) == "string" and name:sub(1, 1) ~= "_"
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do
    out[#out + 1] = k
  end
  table.sort(out)
  return out
end

-- The upvalue `name` of the first of `fns` (functions, nil skipped) that
-- has one, or of the functions they hold as upvalues (3 levels down): the
-- option tables are locals of the files that check the options, read here
-- as the checking code itself uses them.
local function find_upvalue(fns, name, depth, seen)
  local inner = {}
  for _, fn in pairs(fns) do
    if not seen[fn] then
      seen[fn] = true
      local i = 1
      while true do
        local n, v = debug.getupvalue(fn, i)
        if n == nil then
          break
        end
        if n == name then
          return v
        end
        if type(v) == "function" then
          inner[#inner + 1] = v
        end
        i = i + 1
      end
    end
  end
  if depth > 1 and #inner > 0 then
    return find_upvalue(inner, name, depth - 1, seen)
  end
end

local function upvalue(fns, name)
  local v = find_upvalue(fns, name, 3, {})
  if v ~= nil then
    return v
  end
  error("no option table " .. name .. " used by the checking functions"
        .. " (renamed or moved? update spec/92)", 2)
end

-- The functions that check lb.new's options, the health checks' and the
-- C discovery sources' (lb.args, or lb.health for the health checks).
local CHECK_NEW = { args.options }
local CHECK_HEALTH = { args.health_check, lb.health.check }
local CHECK_SOURCE = { args.discovery_source }

local function union(...)
  local out = {}
  for _, t in ipairs({ ... }) do
    for k in pairs(t) do
      out[k] = true
    end
  end
  return out
end

local doc = assert(nginx.read_file(DOC_PATH), "cannot read " .. DOC_PATH)
-- require("lb.nginx").status(...) is lb.nginx.status
local text = doc:gsub('require%("lb%.nginx"%)%.', "lb.nginx.")

-- Is `name` (a qualified name, a method "balancer:x") in the text, as a
-- whole name?
local function mentions(s, name)
  local pat = name:gsub("[%.%:%(%)%[%]%-%+%*%?%^%$%%]", "%%%0")
  return s:find("%f[%w_%.:]" .. pat .. "%f[^%w_]") ~= nil
end

-- The text of a section: from the line starting with `head` to the next
-- line starting with "## " (or the end).
local function section(head)
  local s = text:find("\n" .. head, 1, true)
  assert(s, DOC_PATH .. ": no section '" .. head .. "'")
  local e = text:find("\n## ", s + 1, true)
  return text:sub(s, e or #text)
end

-- The text from the first line containing `from` up to the first line
-- after it containing any of `to` (or "## ").
local function region(from, to)
  local s = text:find(from, 1, true)
  assert(s, DOC_PATH .. ": no '" .. from .. "'")
  local e = #text
  for _, t in ipairs(to) do
    local p = text:find(t, s + #from, true)
    if p and p < e then
      e = p
    end
  end
  return text:sub(s, e)
end

-- Names in the first cell of each table row: "| `a` |", "| `a`, `b` |".
local function row_names(s)
  local out = {}
  for cell in s:gmatch("\n|([^|\n]*)|") do
    for name in cell:gmatch("`([%w_]+)`") do
      out[#out + 1] = name
    end
  end
  return out
end

-- The fields of a signature "lb.health.tcp{ a = 1, b, c = { x, y } }":
-- each top-level item's leading name.
local function signature_fields(s, head)
  local p = s:find(head .. "{", 1, true)
  assert(p, DOC_PATH .. ": no signature '" .. head .. "{ ... }'")
  local i, depth, item, out = p + #head + 1, 1, {}, {}
  local function flush()
    local name = table.concat(item):match("^%s*([%a_][%w_]*)")
    if name then
      out[#out + 1] = name
    end
    item = {}
  end
  while depth > 0 and i <= #s do
    local c = s:sub(i, i)
    if c == "{" then
      depth = depth + 1
    elseif c == "}" then
      depth = depth - 1
    end
    if depth == 1 and c == "," then
      flush()
    elseif depth >= 1 and not (depth == 1 and c == "}") then
      item[#item + 1] = c
    end
    i = i + 1
  end
  flush()
  return out
end

-- Collect missing entries; fail once, naming every one.
local function report(what, list)
  assert(#list == 0, what .. ":\n  " .. table.concat(list, "\n  "))
end

---------------------------------------------------------------------------
-- The surface of lb.nginx, read in nginx
---------------------------------------------------------------------------

local NGINX_PROBE = [[
{{lua_paths}}
    init_by_lua_block {
        app = assert(require("lb").new({ backends = { "10.0.0.1:80" } }))
    }
    server {
        listen 127.0.0.1:{{port}};
        location = /surface {
            content_by_lua_block {
                local m = require("lb.nginx")
                local out = {}
                for k, v in pairs(m) do
                    out[#out + 1] = "module " .. tostring(k) .. " " .. type(v)
                end
                local peer = assert(m.new(app))
                local mt = getmetatable(peer)
                for k, v in pairs(mt.__index) do
                    out[#out + 1] = "peer " .. tostring(k) .. " " .. type(v)
                end
                for name in ngx.var.arg_options:gmatch("[%w_]+") do
                    local _, err = m.new(app, { [name] = {} })
                    out[#out + 1] = "option " .. name .. " "
                        .. ((err or ""):find("unknown option", 1, true)
                            and "unknown" or "known")
                end
                table.sort(out)
                ngx.say(table.concat(out, "\n"))
            }
        }
    }
]]

-- { module = { name = type }, peer = { name = type },
--   option = { name = "known" | "unknown" } } for the option names given.
local function nginx_surface(options)
  local port = assert(nginx.free_port())
  local srv = assert(nginx.start({
    lua = true, http = NGINX_PROBE,
    vars = { lua_paths = nginx.lua_paths(), port = port },
    wait = { "127.0.0.1:" .. port },
  }))
  local r, err = nginx.get("127.0.0.1:" .. port, "/surface?options="
                           .. table.concat(options, ","))
  local log = srv:error_log()
  srv:stop()
  assert(r, err)
  assert(r.status == 200, "status " .. r.status .. ": " .. log)
  local out = { module = {}, peer = {}, option = {} }
  for kind, name, v in r.body:gmatch("(%a+) ([%w_]+) (%a+)") do
    out[kind][name] = v
  end
  return out
end

-- The options of lb.nginx.new the document gives: rows of the table in
-- "## lb.nginx".
local function nginx_new_options()
  return row_names(region("| `lb.nginx.new` option", { "\n\n" }))
end

---------------------------------------------------------------------------

describe("docs/api.md", function()
  local surface -- lb.nginx, read once

  setup(function()
    -- the documented options are probed; a document without the table
    -- fails in the last case, not here
    local ok, documented = pcall(nginx_new_options)
    surface = nginx_surface(ok and documented or {})
  end)

  teardown(function()
    nginx.stop_all()
  end)

  -- Every public name of the code, qualified as the document writes it.
  local function code_names()
    local names = {}
    local function add(prefix, t, sep)
      for _, k in ipairs(sorted_keys(t)) do
        if public(k) then
          names[#names + 1] = prefix .. (sep or ".") .. k
        end
      end
    end
    add("lb", lb)
    add("lb.health", lb.health)
    add("lb.discovery", lb.discovery)
    local methods = {}
    for k, v in pairs(lb.Balancer) do
      if type(v) == "function" then methods[k] = v end
    end
    add("balancer", methods, ":")
    local static = assert(lb.discovery.static({}))
    local smethods = {}
    for k, v in pairs(getmetatable(static).__index) do
      if type(v) == "function" then smethods[k] = v end
    end
    add("static", smethods, ":")
    add("lb.nginx", surface.module)
    local pmethods = {}
    for k, ty in pairs(surface.peer) do
      if ty == "function" then pmethods[k] = true end
    end
    add("peer", pmethods, ":")
    return names
  end

  it("documents every public name of lb, lb.health, lb.discovery, "
     .. "lb.nginx, the balancer, a static discovery and the peer", function()
    local missing = {}
    for _, name in ipairs(code_names()) do
      if not mentions(text, name) then
        missing[#missing + 1] = name
      end
    end
    report("not in " .. DOC_PATH, missing)
  end)

  -- Does a name the document writes exist in the code?
  local function exists(name)
    local obj, method = name:match("^(%a+):([%w_]+)$")
    if obj == "balancer" then
      return type(lb.Balancer[method]) == "function"
    elseif obj == "static" then
      local mt = getmetatable(assert(lb.discovery.static({})))
      return type(mt.__index[method]) == "function"
    elseif obj == "peer" then
      return surface.peer[method] == "function"
    end
    if name == "lb.nginx" then
      return next(surface.module) ~= nil
    end
    local rest = name:match("^lb%.nginx%.([%w_]+)$")
    if rest then
      return surface.module[rest] ~= nil
    end
    -- lb.a.b...: fields of require("lb"), or of a module lb.a
    local parts = {}
    for p in name:gmatch("[^%.]+") do
      parts[#parts + 1] = p
    end
    local v = lb
    for i = 2, #parts do
      if type(v) ~= "table" then
        return false
      end
      local f = v[parts[i]]
      if f == nil and i == 2 then
        local mod = "lb." .. parts[2]
        local ok, m = pcall(require, mod)
        f = ok and m or nil
      end
      if f == nil then
        return false
      end
      v = f
    end
    return true
  end

  it("names nothing the code does not have", function()
    local wrong, seen = {}, {}
    local function check(name)
      if not seen[name] then
        seen[name] = true
        if not exists(name) then
          wrong[#wrong + 1] = name
        end
      end
    end
    -- qualified names, not parts of a path or a file name (lua/lb.lua)
    -- nor the C header lb.h
    for pre, name in text:gmatch("()(lb%.[%a_][%w_%.]*)") do
      local before = pre > 1 and text:sub(pre - 1, pre - 1) or " "
      name = name:gsub("%.+$", "")
      if not before:find("[%w_/%.%-]") and name ~= "lb.h"
         and name ~= "lb.lua" then
        check(name)
      end
    end
    for name in text:gmatch("%f[%w_]balancer:[%a_][%w_]*") do check(name) end
    for name in text:gmatch("%f[%w_]static:[%a_][%w_]*") do check(name) end
    for name in text:gmatch("%f[%w_]peer:[%a_][%w_]*") do check(name) end
    report(DOC_PATH .. " names what the code does not have", wrong)
  end)

  -- Options: what args.lua accepts against what the document lists.
  local function compare(what, accepted, documented)
    local doc_set, missing, wrong = {}, {}, {}
    for _, n in ipairs(documented) do
      doc_set[n] = true
      if not accepted[n] then
        wrong[#wrong + 1] = n
      end
    end
    for _, n in ipairs(sorted_keys(accepted)) do
      if not doc_set[n] then
        missing[#missing + 1] = n
      end
    end
    report(what .. ": options accepted but not in " .. DOC_PATH, missing)
    report(what .. ": options in " .. DOC_PATH .. " that are not accepted",
           wrong)
  end

  it("lists every option of lb.new, and only those", function()
    compare("lb.new", upvalue(CHECK_NEW, "OPTIONS"),
            row_names(section("## lb.new(opts)")))
  end)

  it("lists every option of lb.health.tcp, .http and .custom, and only "
     .. "those", function()
    local common = upvalue(CHECK_HEALTH, "COMMON")
    local known = upvalue(CHECK_HEALTH, "KNOWN")
    local s = section("## Health checks")
    for _, kind in ipairs(sorted_keys(known)) do
      compare("lb.health." .. kind, union(common, known[kind]),
              signature_fields(s, "lb.health." .. kind))
    end
  end)

  it("lists every option of lb.discovery.dns and .etcd, and only those",
     function()
    local src = upvalue(CHECK_SOURCE, "SOURCE_KNOWN")
    assert.are.same({ "dns", "etcd" }, sorted_keys(src))
    compare("lb.discovery.dns", src.dns,
            row_names(region("lb.discovery.dns({", { "lb.discovery.etcd({",
                                                      "\n## " })))
    compare("lb.discovery.etcd", src.etcd,
            row_names(region("lb.discovery.etcd({", { "\n## " })))
  end)

  -- The row "| `name` | ..." of a table in s.
  local function row_text(s, name)
    local r = s:match("\n(|%s*`" .. name .. "`%s*|[^\n]*)")
    assert(r, DOC_PATH .. ": no row for `" .. name .. "`")
    return r
  end

  it("names every key of the nested options (passive, slow_start, "
     .. "shared, tls)", function()
    local new = section("## lb.new(opts)")
    local passive_text = section("## Passive health, panic, slow start")
    local groups = {
      { "passive", upvalue({ args.passive }, "PASSIVE_KEYS"),
        row_text(new, "passive") .. passive_text },
      { "slow_start", upvalue({ args.slow_start }, "SLOW_DEFAULTS"),
        row_text(new, "slow_start") .. passive_text },
      { "shared", upvalue({ args.shared_capacity }, "SHARED_KEYS"),
        row_text(new, "shared") },
      { "lb.health.* tls", upvalue(CHECK_HEALTH, "TLS_KEYS"),
        section("## Health checks") },
      { "lb.discovery.etcd tls", upvalue(CHECK_SOURCE, "ETCD_TLS_KEYS"),
        row_text(region("lb.discovery.etcd({", { "\n## " }), "tls") },
    }
    local missing = {}
    for _, g in ipairs(groups) do
      for _, k in ipairs(sorted_keys(g[2])) do
        if not mentions(g[3], k) then
          missing[#missing + 1] = g[1] .. "." .. k
        end
      end
    end
    report("nested options missing from " .. DOC_PATH, missing)
  end)

  it("lists only options lb.nginx.new accepts", function()
    local documented = nginx_new_options()
    assert(#documented > 0, "no lb.nginx.new option table")
    local wrong = {}
    for _, n in ipairs(documented) do
      if surface.option[n] ~= "known" then
        wrong[#wrong + 1] = n
      end
    end
    report("lb.nginx.new options in " .. DOC_PATH .. " it does not accept",
           wrong)
  end)
end)
