-- ARGV[3] stream: flat (node, parent or '', depth) of live carriers;
-- drops members whose entry expired from the index.
local s = ARGV[3]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', carriers_key(s))) do
  local e = get_carrier(s, id)
  if not e then
    redis.call('SREM', carriers_key(s), id)
  elseif alive(id) then
    table.insert(out, id)
    table.insert(out, e.p)
    table.insert(out, e.d)
  end
end
return out
