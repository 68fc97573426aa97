-- The NodeInfo JSON of every live node; drops expired ids from the index.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local v = redis.call('GET', node_key(id))
  if v then table.insert(out, v) else redis.call('SREM', P .. 'nodes', id) end
end
return out
