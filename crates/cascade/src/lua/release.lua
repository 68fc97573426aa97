-- ARGV[3] stream, ARGV[4] node: 1 if it held the origin and let it go.
local s, id = ARGV[3], ARGV[4]
if redis.call('GET', origin_key(s)) ~= id then return 0 end
redis.call('DEL', origin_key(s))
local e = get_carrier(s, id)
if e and e.p == '' then del_carrier(s, id) end
return 1
