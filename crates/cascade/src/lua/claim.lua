-- ARGV[3] stream, ARGV[4] node. {1, node} won, {0, holder} held by a live
-- node, {-1, ''} the claimant is not registered.
local s, id = ARGV[3], ARGV[4]
if not alive(id) then return {-1, ''} end
local cur = redis.call('GET', origin_key(s))
if cur and cur ~= id and alive(cur) then return {0, cur} end
take_origin(s, id, cur)
return {1, id}
