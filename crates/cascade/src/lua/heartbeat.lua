-- ARGV[3] node id, ARGV[4] its NodeInfo JSON, ARGV[5] n, then n origin
-- streams, then (stream, parent, depth) triples: everything this node's
-- process holds. Refreshes all of it, re-creating what expired.
-- Returns {1 if the node was not registered, {lost origin streams}}.
local id = ARGV[3]
local fresh = redis.call('EXISTS', node_key(id)) == 0
redis.call('SET', node_key(id), ARGV[4], 'PX', TTL)
redis.call('SADD', P .. 'nodes', id)
redis.call('PEXPIRE', P .. 'nodes', TTL)
local lost = {}
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  local s = ARGV[i]
  i = i + 1
  local cur = redis.call('GET', origin_key(s))
  if (not cur) or cur == id or not alive(cur) then
    take_origin(s, id, cur)
  else
    local e = get_carrier(s, id)
    if e and e.p == '' then del_carrier(s, id) end
    table.insert(lost, s)
  end
end
while i + 2 <= #ARGV do
  put_carrier(ARGV[i], id, ARGV[i + 1], tonumber(ARGV[i + 2]))
  i = i + 3
end
return {fresh and 1 or 0, lost}
