-- Shared by every script (prepended in src/redis.rs). ARGV[1] is the key
-- prefix, ARGV[2] the TTL in milliseconds; keys are built here from names
-- that cannot contain ':' or ' ' (checked in Rust), since this single
-- Redis is not a cluster.
local P = ARGV[1]
local TTL = tonumber(ARGV[2])
local function node_key(id) return P .. 'node:' .. id end
local function origin_key(s) return P .. 'origin:' .. s end
local function carrier_key(s, id) return P .. 'carrier:' .. s .. ':' .. id end
local function carriers_key(s) return P .. 'carriers:' .. s end
local function children_key(id) return P .. 'children:' .. id end
local function alive(id) return redis.call('EXISTS', node_key(id)) == 1 end
-- A carrier entry: {p = parent id or '' for the origin, d = depth}.
local function get_carrier(s, id)
  local v = redis.call('GET', carrier_key(s, id))
  if not v then return nil end
  return cjson.decode(v)
end
local function del_carrier(s, id)
  local e = get_carrier(s, id)
  if e and e.p ~= '' then redis.call('SREM', children_key(e.p), s .. ' ' .. id) end
  redis.call('DEL', carrier_key(s, id))
  redis.call('SREM', carriers_key(s), id)
end
local function put_carrier(s, id, parent, depth)
  local old = get_carrier(s, id)
  if old and old.p ~= '' and old.p ~= parent then
    redis.call('SREM', children_key(old.p), s .. ' ' .. id)
  end
  redis.call('SET', carrier_key(s, id), cjson.encode({p = parent, d = depth}), 'PX', TTL)
  -- The index sets live as long as any member refreshes them.
  redis.call('SADD', carriers_key(s), id)
  redis.call('PEXPIRE', carriers_key(s), TTL)
  if parent ~= '' then
    redis.call('SADD', children_key(parent), s .. ' ' .. id)
    redis.call('PEXPIRE', children_key(parent), TTL)
  end
end
-- Takes an origin held by nobody live: the dead holder's depth-0 entry goes.
local function take_origin(s, id, cur)
  if cur and cur ~= id then
    local e = get_carrier(s, cur)
    if e and e.p == '' then del_carrier(s, cur) end
  end
  redis.call('SET', origin_key(s), id, 'PX', TTL)
  put_carrier(s, id, '', 0)
end
