-- ARGV[3] stream, ARGV[4] node: 1 if it had a relay entry and left.
local s, id = ARGV[3], ARGV[4]
local e = get_carrier(s, id)
if (not e) or e.p == '' then return 0 end
del_carrier(s, id)
return 1
