-- The location values of a micro-batch, recorded in each user's location history: the rule
-- of fraudops.features.LocationHistory, inside Redis so that reading and recording a user
-- is one atomic step (see serving/feature_state/redis_location.py). It runs beside the
-- velocity script (redis_store.lua), in the same round trip, on a key of its own.
-- KEYS: one per transaction, every key the script touches: its user's location history
-- ("<history key>:geo", so it shares the history's cluster slot).
-- ARGV: retention, trim slack, ttl, window, then the transactions, one line each:
-- "timestamp TAB country TAB id" (an empty country: unknown).
-- Returns one string per transaction: "new distinct" (is the country new for the user; how
-- many distinct countries in (ts - window, ts], this one included; "0 0" when unknown).
-- Nothing is written unless every line is well formed and there is one key per line.
--
-- A user's value: a first line "@" then " CC first_ts" per country (where the user first
-- paid from it; kept while the key lives), then the user's events in arrival order, one
-- line each: "timestamp TAB country TAB values TAB id", values being what the event was
-- first given (a repeat gets them again and is not recorded twice). Events at or before
-- `retention` behind a new event are dropped once the oldest is `trim slack` older still.

local retention, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local ttl, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local find, gmatch, sub = string.find, string.gmatch, string.sub

local function read_place(key)
  local value = redis.call('GET', key) or '@\n'
  local nl = find(value, '\n', 1, true)
  local user = {first = {}, events = sub(value, nl + 1)}
  for c, t in gmatch(sub(value, 2, nl - 1), '(%S+) (%S+)') do user.first[c] = tonumber(t) end
  return user
end

-- What a repeat of `id` was first given, or nil.
local function first_values(user, id)
  if not find(user.events, '\t' .. id .. '\n', 1, true) then return nil end
  for v, other in gmatch(user.events, '[^\t]*\t[^\t]*\t([^\t]*)\t([^\n]*)\n') do
    if other == id then return v end
  end
  return nil
end

local function place_values(user, ts, country)
  if country == '' then return '0 0' end
  local first = user.first[country]
  local new = (first == nil or first > ts) and 1 or 0
  local seen, n = {[country] = true}, 1
  for t, c in gmatch(user.events, '([^\t]*)\t([^\t]*)\t[^\n]*\n') do
    t = tonumber(t)
    if c ~= '' and t <= ts and t > ts - window and not seen[c] then
      seen[c], n = true, n + 1
    end
  end
  return new .. ' ' .. n
end

local function trim_place(user, ts)
  local oldest = nil
  for t in gmatch(user.events, '([^\t]*)\t[^\n]*\n') do
    t = tonumber(t)
    if oldest == nil or t < oldest then oldest = t end
  end
  if oldest == nil or oldest > ts - retention - slack then return end
  local kept = {}
  for line in gmatch(user.events, '[^\n]*\n') do
    if tonumber(string.match(line, '^[^\t]*')) > ts - retention then kept[#kept + 1] = line end
  end
  user.events = table.concat(kept)
end

local function record_place(user, ts, written, country, id)
  local found = place_values(user, ts, country)
  user.events = user.events .. written .. '\t' .. country .. '\t' .. found .. '\t' .. id .. '\n'
  if country ~= '' and (user.first[country] == nil or ts < user.first[country]) then
    user.first[country] = ts
  end
  trim_place(user, ts)
  return found
end

local function write_place(key, user)
  local head = {'@'}
  for c, t in pairs(user.first) do head[#head + 1] = ' ' .. c .. ' ' .. string.format('%d', t) end
  redis.call('SET', key, table.concat(head) .. '\n' .. user.events, 'EX', ttl)
end

local users, changed, out = {}, {}, {}
local i = 0
for written, country, id in gmatch(ARGV[5], '([^\t]*)\t([^\t]*)\t([^\n]*)\n') do
  i = i + 1
  local key, ts = KEYS[i], tonumber(written)
  if key == nil or ts == nil or not find(country, '^%u?%u?$') then
    return redis.error_reply('fraudops: location ' .. i .. ': key, timestamp or country malformed')
  end
  local user = users[key]
  if user == nil then
    user = read_place(key)
    users[key] = user
  end
  local found = first_values(user, id)
  if not found then
    found = record_place(user, ts, written, country, id)
    if not changed[key] then changed[key] = true changed[#changed + 1] = key end
  end
  out[i] = found
end
if i ~= #KEYS then
  return redis.error_reply('fraudops: ' .. #KEYS .. ' keys for ' .. i .. ' location lines')
end
for _, key in ipairs(changed) do write_place(key, users[key]) end
return out
