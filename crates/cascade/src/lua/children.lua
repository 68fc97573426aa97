-- Shared by join.lua and children.lua (prepended after the prelude):
-- the live links a parent feeds as "stream child" members, pruning dead
-- and moved ones from its index.
local function live_children(parent)
  local out = {}
  for _, m in ipairs(redis.call('SMEMBERS', children_key(parent))) do
    local sp = string.find(m, ' ', 1, true)
    local e = nil
    local s, c = '', ''
    if sp then
      s, c = string.sub(m, 1, sp - 1), string.sub(m, sp + 1)
      e = get_carrier(s, c)
    end
    if (not e) or e.p ~= parent then
      redis.call('SREM', children_key(parent), m)
    elseif alive(c) then
      table.insert(out, m)
    end
  end
  return out
end
