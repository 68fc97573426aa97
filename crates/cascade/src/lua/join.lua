-- ARGV[3] stream, ARGV[4] node, ARGV[5] parent, ARGV[6] walk limit.
-- {1, depth} joined; {-1} node not registered; {-2} loop; {-3} node is the
-- origin; {-4} parent gone or not carrying; {-5} parent's fan-out full.
local s, id, parent = ARGV[3], ARGV[4], ARGV[5]
if parent == id then return {-2} end
if not alive(id) then return {-1} end
local origin = redis.call('GET', origin_key(s))
if origin == id then return {-3} end
if not alive(parent) then return {-4} end
local pe = get_carrier(s, parent)
if not pe then return {-4} end
local up = pe
for _ = 1, tonumber(ARGV[6]) do
  if up.p == '' then break end
  if up.p == id then return {-2} end
  up = get_carrier(s, up.p)
  if not up then break end
end
local info = cjson.decode(redis.call('GET', node_key(parent)))
local limit = tonumber(info.fanout_limit) or 0
local me = s .. ' ' .. id
local used = 0
for _, m in ipairs(live_children(parent)) do
  if m ~= me then used = used + 1 end
end
if used >= limit then return {-5} end
local depth = pe.d + 1
put_carrier(s, id, parent, depth)
return {1, depth}
