-- ARGV[3] node id, ARGV[4] n, then n origin streams, then relay streams.
local id = ARGV[3]
local n = tonumber(ARGV[4])
for i = 5, #ARGV do
  local s = ARGV[i]
  if i < 5 + n then
    if redis.call('GET', origin_key(s)) == id then redis.call('DEL', origin_key(s)) end
  end
  if get_carrier(s, id) then del_carrier(s, id) end
end
redis.call('DEL', node_key(id))
redis.call('SREM', P .. 'nodes', id)
return 1
