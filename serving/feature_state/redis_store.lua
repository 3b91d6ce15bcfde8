-- The velocity values of a micro-batch, recorded in each user's history: the window rule
-- of fraudops.features.window_sums, inside Redis so that reading and recording a user is
-- one atomic step (see serving/feature_state/redis_store.py and contract.py).
-- KEYS: two per transaction, every key the script touches: its user's history, then that
-- history's id index (the history key and ":ids"; checked, so both share a cluster slot).
-- ARGV: retention, trim slack, ttl, heavy lines, header width, window count, the windows
-- (ascending), then the transactions, one line each: "timestamp TAB amount TAB id".
-- Returns one string per transaction: "count sum" per window, then the gap (-1: no
-- earlier event). Nothing is written unless every line and key pair is well formed.
--
-- A user's value is its events, one line each: "timestamp TAB amount TAB values TAB id".
-- A short history (at most `heavy` lines) is in arrival order and read whole for each
-- transaction. A longer one is in time order behind a fixed-width header ("#" newest, then
-- per window the offset of its first event, its count and its sum): a transaction in time
-- order moves each window's front past the events that left it (amortised O(1)); a late
-- one reads the history whole and is put in its place. A window's sum is set to 0
-- whenever its count is (rounding cannot build up while the user pauses).

local retention, trim_slack, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local heavy, width, nw = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local windows = {}
for w = 1, nw do windows[w] = tonumber(ARGV[6 + w]) end
local longest = windows[nw]
local reply_format = string.rep('%d %.17g ', nw) .. '%d'
local find, gmatch, sub, tonumber = string.find, string.gmatch, string.sub, tonumber

-- The timestamp and amount of the line starting at `pos`, and where the next line starts.
local function event_at(events, pos)
  local tab = find(events, '\t', pos, true)
  local tab2 = find(events, '\t', tab + 1, true)
  local t, a = tonumber(sub(events, pos, tab - 1)), tonumber(sub(events, tab + 1, tab2 - 1))
  return t, a, find(events, '\n', tab2 + 1, true) + 1
end

-- Counts and sums per window of the events in (ts - window, ts], the latest event at or
-- before ts, the oldest event, and the number of events: a read of the whole history.
local scan_counts, scan_sums = {}, {}  -- reused: read before the next scan
local function scan(events, ts)
  local counts, sums, prev, oldest, n = scan_counts, scan_sums, nil, nil, 0
  for w = 1, nw do counts[w], sums[w] = 0, 0 end
  for t, a in gmatch(events, '([^\t]*)\t([^\t]*)\t[^\n]*\n') do
    t, n = tonumber(t), n + 1
    if oldest == nil or t < oldest then oldest = t end
    if t <= ts then
      if prev == nil or t > prev then prev = t end
      if t > ts - longest then
        a = tonumber(a)
        for w = 1, nw do
          if t > ts - windows[w] then counts[w], sums[w] = counts[w] + 1, sums[w] + a end
        end
      end
    end
  end
  return counts, sums, prev, oldest, n
end

-- A long history's lines added in this call join its events (they are kept apart so
-- that adding one does not copy the whole history).
local function settle(user)
  if #user.added > 0 then
    user.events, user.added = user.events .. table.concat(user.added), {}
  end
end

-- A long history's window state at its newest event, from its events (in time order):
-- made once, when a short history turns long.
local function window_state(user)
  local events, newest = user.events, user.newest
  user.fronts, user.counts, user.sums = {}, {}, {}
  for w = 1, nw do
    local pos, count, sum, front = 1, 0, 0, nil
    while pos <= #events do
      local t, a, next_pos = event_at(events, pos)
      if t > newest - windows[w] then
        front = front or pos
        count, sum = count + 1, sum + a
      end
      pos = next_pos
    end
    user.fronts[w], user.counts[w], user.sums[w] = front or #events + 1, count, sum
  end
end

local function header(user)
  local fields = {'#' .. string.format('%.17g', user.newest)}
  for w = 1, nw do
    fields[#fields + 1] = string.format('%d %d %.17g', user.fronts[w], user.counts[w], user.sums[w])
  end
  local text = table.concat(fields, ' ')
  return text .. string.rep(' ', width - 1 - #text) .. '\n'
end

local function read_user(key, ids_key)
  local value = redis.call('GET', key) or ''
  local user = {stored = #value, rewrite = false, ids_key = ids_key}
  if sub(value, 1, 1) ~= '#' then
    user.events, user.heavy = value, false
    return user
  end
  user.events, user.heavy, user.was_heavy = sub(value, width + 1), true, true
  user.added, user.new_ids, user.dropped_ids = {}, {}, {}
  user.stored = #value - width
  local numbers = {}
  for field in gmatch(sub(value, 2, width), '%S+') do numbers[#numbers + 1] = tonumber(field) end
  user.newest, user.fronts, user.counts, user.sums = numbers[1], {}, {}, {}
  for w = 1, nw do
    local at = 3 * w - 1
    user.fronts[w], user.counts[w], user.sums[w] = numbers[at], numbers[at + 1], numbers[at + 2]
  end
  return user
end

-- The events in time order (ties in arrival order): a short history turning long.
local function sorted_events(events)
  local lines = {}
  for line in gmatch(events, '[^\n]*\n') do
    lines[#lines + 1] = {tonumber(string.match(line, '^[^\t]*')), #lines, line}
  end
  table.sort(lines, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
  local out = {}
  for k = 1, #lines do out[k] = lines[k][3] end
  return table.concat(out), lines[#lines][1]
end

-- Where the first event after `cutoff` starts in a long history (it is in time order).
local function first_after(events, cutoff)
  local pos = 1
  while pos <= #events do
    local t, _, next_pos = event_at(events, pos)
    if t > cutoff then break end
    pos = next_pos
  end
  return pos
end

-- Drop a long history's events at or before `cutoff`: a prefix, and before every window's
-- front (the cutoff is older than the longest window).
local function trim_long(user, cutoff)
  settle(user)
  local keep = first_after(user.events, cutoff)
  for id in gmatch(sub(user.events, 1, keep - 1), '[^\n]*\t([^\t\n]*)\n') do
    user.dropped_ids[#user.dropped_ids + 1], user.new_ids[id] = id, nil
  end
  user.events, user.rewrite = sub(user.events, keep), true
  for w = 1, nw do user.fronts[w] = user.fronts[w] - (keep - 1) end
end

local function trim_short(user, cutoff)
  local kept = {}
  for line in gmatch(user.events, '[^\n]*\n') do
    if tonumber(string.match(line, '^[^\t]*')) > cutoff then kept[#kept + 1] = line end
  end
  user.events, user.rewrite = table.concat(kept), true
  return #kept
end

local values = {}
local function reply(counts, sums, prev, ts)
  for w = 1, nw do values[2 * w - 1], values[2 * w] = counts[w], sums[w] end
  values[2 * nw + 1] = prev and (ts - prev) or -1
  return string.format(reply_format, unpack(values, 1, 2 * nw + 1))
end

-- A transaction of a short history: read it whole, then append; a history growing past
-- `heavy` lines is put in time order and gets its window state.
local never_seen = nil  -- the reply of a user without history, made once a call
local function record_short(user, ts, written, amount, id)
  local found, n = never_seen, 0
  if user.events ~= '' then
    local counts, sums, prev, oldest
    counts, sums, prev, oldest, n = scan(user.events, ts)
    found = reply(counts, sums, prev, ts)
    if oldest <= ts - retention - trim_slack then n = trim_short(user, ts - retention) end
  elseif found == nil then
    local counts, sums = scan('', ts)
    found = reply(counts, sums, nil, ts)
    never_seen = found
  end
  user.events = user.events .. written .. '\t' .. amount .. '\t' .. found .. '\t' .. id .. '\n'
  if n + 1 > heavy then
    user.events, user.newest = sorted_events(user.events)
    user.heavy, user.rewrite = true, true
    user.added, user.new_ids, user.dropped_ids = {}, {}, {}
    for f, other in gmatch(user.events, '[^\t]*\t[^\t]*\t([^\t]*)\t([^\n]*)\n') do
      user.new_ids[other] = f
    end
    window_state(user)
  end
  return found
end

-- A transaction of a long history: in time order, move each window's front past the
-- events that left it and read the window state; late, read the history whole and put the
-- event in its place (after its ties).
local function record_long(user, ts, written, amount_text, id)
  local found, line, amount = nil, nil, tonumber(amount_text)
  if ts >= user.newest then
    for w = 1, nw do
      local pos, cut = user.fronts[w], ts - windows[w]
      while true do
        if pos > #user.events then
          if #user.added == 0 then break end
          settle(user)
        end
        local t, a, next_pos = event_at(user.events, pos)
        if t > cut then break end
        user.counts[w], user.sums[w], pos = user.counts[w] - 1, user.sums[w] - a, next_pos
      end
      user.fronts[w] = pos
      if user.counts[w] == 0 then user.sums[w] = 0 end
    end
    found = reply(user.counts, user.sums, user.newest, ts)
    line = written .. '\t' .. amount_text .. '\t' .. found .. '\t' .. id .. '\n'
    for w = 1, nw do
      user.counts[w], user.sums[w] = user.counts[w] + 1, user.sums[w] + amount
    end
    user.added[#user.added + 1], user.newest = line, ts
  else
    settle(user)
    local counts, sums, prev = scan(user.events, ts)
    found = reply(counts, sums, prev, ts)
    line = written .. '\t' .. amount_text .. '\t' .. found .. '\t' .. id .. '\n'
    local pos = first_after(user.events, ts)
    user.events = sub(user.events, 1, pos - 1) .. line .. sub(user.events, pos)
    user.rewrite = true
    for w = 1, nw do
      if ts > user.newest - windows[w] then
        user.counts[w], user.sums[w] = user.counts[w] + 1, user.sums[w] + amount
      else
        user.fronts[w] = user.fronts[w] + #line
      end
    end
  end
  user.new_ids[id] = found
  local oldest = tonumber(string.match(user.events, '^[^\t]*') or ts)
  if oldest <= ts - retention - trim_slack then trim_long(user, ts - retention) end
  return found
end

-- A long history's transaction ids (and their first features) live in a hash beside it,
-- so that a repeat is found without searching the history.
local function write_ids(ids_key, user)
  for first = 1, #user.dropped_ids, 1000 do
    local last = math.min(first + 999, #user.dropped_ids)
    redis.call('HDEL', ids_key, unpack(user.dropped_ids, first, last))
  end
  local pairs_ = {}
  for id, features in pairs(user.new_ids) do
    pairs_[#pairs_ + 1], pairs_[#pairs_ + 2] = id, features
    if #pairs_ >= 2000 then redis.call('HSET', ids_key, unpack(pairs_)) pairs_ = {} end
  end
  if #pairs_ > 0 then redis.call('HSET', ids_key, unpack(pairs_)) end
  redis.call('EXPIRE', ids_key, ttl)
end

local function write_user(key, user)
  local fresh = user.stored > 0 and not user.rewrite
  if user.heavy then
    local added = table.concat(user.added)
    if fresh and user.was_heavy then
      redis.call('SETRANGE', key, 0, header(user))
      redis.call('APPEND', key, sub(user.events, user.stored + 1) .. added)
      redis.call('EXPIRE', key, ttl)
    else
      redis.call('SET', key, header(user) .. user.events .. added, 'EX', ttl)
    end
    write_ids(user.ids_key, user)
  elseif fresh then
    redis.call('APPEND', key, sub(user.events, user.stored + 1))
    redis.call('EXPIRE', key, ttl)
  else
    redis.call('SET', key, user.events, 'EX', ttl)
  end
end

local users, changed, out = {}, {}, {}
local i = 0
for written, amount, id in gmatch(ARGV[7 + nw], '([^\t]*)\t([^\t]*)\t([^\n]*)\n') do
  i = i + 1
  local key, ids_key, ts = KEYS[2 * i - 1], KEYS[2 * i], tonumber(written)
  if ids_key ~= key .. ':ids' or ts == nil then
    return redis.error_reply('fraudops: transaction ' .. i .. ': keys or timestamp malformed')
  end
  local user = users[key]
  if user == nil then
    user = read_user(key, ids_key)
    users[key] = user
  end
  local found = nil
  if user.heavy then
    found = user.new_ids[id] or (user.was_heavy and redis.call('HGET', user.ids_key, id)) or nil
  elseif user.events ~= '' and find(user.events, '\t' .. id .. '\n', 1, true) then
    for f, other in gmatch(user.events, '[^\t]*\t[^\t]*\t([^\t]*)\t([^\n]*)\n') do
      if other == id then found = f break end
    end
  end
  if not found then
    if user.heavy then
      found = record_long(user, ts, written, amount, id)
    else
      found = record_short(user, ts, written, amount, id)
    end
    if not changed[key] then changed[key] = true changed[#changed + 1] = key end
  end
  out[i] = found
end
if 2 * i ~= #KEYS then
  return redis.error_reply('fraudops: ' .. #KEYS .. ' keys for ' .. i .. ' transaction lines')
end
for _, key in ipairs(changed) do write_user(key, users[key]) end
return out
