-- Built-in checks on the C checker thread: configuration, rounds, events.

return function(lb, Balancer)
  function Balancer._setup_builtin_check()
    return nil, "built-in checks are not available in this build"
  end
  function Balancer._builtin_round()
    return nil, "built-in checks are not available in this build"
  end
  function Balancer._builtin_start()
    return nil, "built-in checks are not available in this build"
  end
  function Balancer._builtin_stop() end
  function Balancer._drain_events() end
  function Balancer._builtin_error_text(_, kind, detail)
    return "check failed (" .. kind .. "/" .. detail .. ")"
  end
  return lb
end
