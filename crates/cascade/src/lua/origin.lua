-- ARGV[3] stream: its live origin or nil.
local cur = redis.call('GET', origin_key(ARGV[3]))
if cur and alive(cur) then return cur end
return false
