-- Health-check descriptors: lb.health.tcp{}, lb.health.http{}, and custom
-- checks (a function, or lb.health.custom{}).
--
-- The constructors only record their options; lb.new checks them (see
-- lb.args.health_check), so a bad option becomes lb.new's `nil, err`
-- ("health_check: timeout must be ...") instead of a silently missing
-- check.

local M = {}

local DESC = {} -- marks descriptor tables

local function desc(kind, opts)
  return { [DESC] = true, kind = kind, opts = opts }
end

function M.tcp(opts)
  return desc("tcp", opts == nil and {} or opts)
end

function M.http(opts)
  return desc("http", opts == nil and {} or opts)
end

function M.custom(opts)
  return desc("custom", opts)
end

-- The kind and options of a descriptor made here, or nil for any other
-- value.
function M.descriptor(v)
  if type(v) == "table" and v[DESC] then
    return v.kind, v.opts
  end
end

return M
