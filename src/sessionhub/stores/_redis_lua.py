"""The Lua of the Redis store: one Redis Functions library, one function per store operation.

Each store operation is one ``FCALL``, atomic on the server. A library, not ``EVALSHA`` scripts:
a script re-runs its whole chunk on every call, so the shared helpers were rebuilt each time (about
5 µs of a call that otherwise takes 10-20 µs); a library runs its chunk once, at ``FUNCTION LOAD``.
The library and function names carry a hash of the code (``sessionhub_<hash>``,
``sh<hash>_create``), so two sessionhub versions can share one Redis during a rolling upgrade. Redis
keeps functions in its RDB/AOF; a server that lost them answers "Function not found", and the store
loads the library again and retries (the only case where an operation takes more than one round trip).

Every function reads ``args[1]`` as the key prefix; functions that append an event read ``args[2]``
as the stream's approximate maximum length. ``keys[1]`` is the session's own hash when the function is
about one session (so a Cluster client could route it); the global index keys are derived from the
prefix inside. The key layout is described in the docstring of ``sessionhub.stores.redis``.

Conventions:

- Refusals are error replies ``SH<CODE>`` followed by arguments, each ended by ``\\31`` (the unit
  separator; Redis turns newlines of error messages into spaces, and appends the function's name to
  errors raised with ``error()``, so every argument is terminated and what follows is ignored).
  They are raised only before the first write, so a refused operation changes nothing.
- Floats written here are formatted with ``%.17g``, which round-trips a double exactly, so a deadline
  computed here equals the one ``sessionhub._models.expires_at`` computes in Python.
- Lua never compares two strings with ``<`` (its order follows the server's locale); id order comes
  from the sorted sets (byte order) alone.
- A function that changes a session returns the new record as ``HGETALL`` would list it, built from
  the record it read and the fields it wrote (in the order Redis keeps them), not read again.

What a call costs Redis, and how the functions keep it low (issue 12; the measurements, pass by
pass, are in ``docs/redis-cpu.md`` and ``benchmarks/bench_redis.py --cpu`` prints them):

- Each ``redis.call`` costs about a microsecond on the project's machine whatever it does, and so
  does each argument of an ``FCALL`` (Redis makes every one a Lua string); a Lua number given to
  ``redis.call`` is formatted again each time; a record read into a table (an ``HGETALL``: about
  25,000 instructions) or packed for an event (``cmsgpack.pack``: about 20,000) costs more than its
  commands. So scores and census deltas travel as text, global key names are made once per prefix,
  and a create is sent its record whole as a ``RESTORE`` payload (built by the store:
  ``_hash_dump``), which writes it in one command for about a tenth of an ``HSET`` of its fields
  and refuses an id that exists (the duplicate check), and its event's snapshot already packed.
  Where Redis refuses ``RESTORE`` (an ACL without it) or the record is too large for a listpack,
  the create is sent each value once, no field names, nothing a new record holds by default; a
  create with nothing to check but its id (``create``; ``create_checked`` for parents, limits
  and unique labels) then checks it with the ``HSETNX`` that writes the record's first field. A
  new record leaves out ``ar`` while no request is in flight. Events trim the stream at every 64th of a prefix (``XADD``'s ``MAXLEN``
  costs about 2,000 instructions).
- The hot writes have functions of their own that read a few fields with one ``HMGET`` and write
  what changes with one ``HSET``: ``touch``, the activity refresh of data and history writes,
  ``claim_end``, ``finish_known``. A store instance keeps the sessions it last wrote or claimed;
  for one of those still at the version it knows, the function is sent the new values and checks
  ``v ce dq`` (the version, and ``ce``, which tells a session created again under the id,
  whatever its clock) instead of reading the record.
- A record begins with the fields those functions look up (``v ce ca dq ea la ua st``): Redis finds
  a field of a small hash by walking it from the start.
- A claim replies with its event's id (the store reads the claimed session from that event's
  snapshot); census counts that drop to zero stay until ``purge``; ``having_children`` asks one
  multi-key ``EXISTS`` per slice of a batch; the ends of an expiry batch are finished together
  (``finish_ends``), their index writes gathered by key.
- The record's format (its fields, not their order; ``ar`` may be absent: every version reads it
  as 0) is the one every earlier version wrote, so stores of every version read each other's data. A packed record (the scalars in one field) would
  make ``get`` cheaper but every write from a store that does not know the session dearer (Lua
  would unpack and pack it); it was not made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["FUNCTIONS", "LIBRARY", "VERSION", "build_library"]

_LIB = r"""
-- Set on entry to every function: Redis runs one function at a time, to the end. 'call' is
-- redis.call, looked up once per call rather than at each command ('redis' is a global of the
-- library's sandbox: about 2% of a create's instructions went to those lookups).
local KEYS, ARGV, P, call

-- The global keys' names under the prefix ('K'), made once per prefix: a concatenation makes a
-- new string each time (hashed, and later collected), several per call on hot paths. Kept for up
-- to 256 prefixes (a Cluster store's buckets each have one).
local K, KNOWN, KNOWN_N = nil, {}, 0
local TRIM_EVERY = 64
local function names(p)
  local k = KNOWN[p]
  if k then return k end
  k = {live = p .. 'live', deadlines = p .. 'deadlines', claims = p .. 'claims',
    retained = p .. 'retained', ended = p .. 'ended', events = p .. 'events',
    census = p .. 'census', uniq = p .. 'uniq', all = p .. 'all', untrimmed = TRIM_EVERY - 1}
  if KNOWN_N < 256 then
    k.untrimmed = 0  -- (names not kept are made again at every call: their next event trims)
    KNOWN[p] = k
    KNOWN_N = KNOWN_N + 1
  end
  return k
end

local US = '\31'
local function skey(sid) return P .. 's:{' .. sid .. '}' end
local function dkey(sid) return P .. 'd:{' .. sid .. '}' end
local function hkey(sid) return P .. 'h:{' .. sid .. '}' end
local function hckey(sid) return P .. 'hc:{' .. sid .. '}' end
local function fnum(x) return string.format('%.17g', x) end
local function fint(x) return string.format('%d', x) end

local function fail(code, ...)
  local parts = {'SH' .. code}
  for _, v in ipairs({...}) do parts[#parts + 1] = tostring(v) end
  error({err = table.concat(parts, US) .. US})
end

local function load(key)
  local flat = call('HGETALL', key)
  if #flat == 0 then return nil, flat end
  -- Sized for the scalars at once (a constructor's fields size the table, nil ones too): filled
  -- from empty, the table was rehashed at every power of two.
  local h = {id = nil, ns = nil, st = nil, u = nil, p = nil, ca = nil, ua = nil, la = nil,
    ea = nil, en = nil, it = nil, ttl = nil, ret = nil, ar = nil, er = nil, v = nil, dq = nil}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h, flat
end

local function fields(key, names)
  local values = call('HMGET', key, unpack(names))
  local h = {}
  for i, name in ipairs(names) do
    if values[i] then h[name] = values[i] end
  end
  return h
end

local function hset_many(key, flat)
  -- HSET in slices: unpack() of thousands of details would overflow the Lua C stack.
  local i = 1
  while i <= #flat do
    local j = math.min(i + 199, #flat)
    call('HSET', key, unpack(flat, i, j))
    i = j + 1
  end
end

-- Writes to one session hash, collected so that they cost one HSET and at most one HDEL. The
-- record read ('flat', as HGETALL listed it; empty when only some fields were read) is edited in
-- place into the new record, so it is returned without reading it again or copying it: changed
-- fields keep their place, new ones follow in the order HSET adds them. A put wins over a drop of
-- the same field, whichever comes first.
local function writer(h, flat)
  local at = {}
  for i = 1, #flat, 2 do at[flat[i]] = i + 1 end
  return {h = h, flat = flat, at = at, sets = {}, written = {}, gone = {}}
end
local function show(w, field, value)
  -- Into the returned record only (a value written otherwise, such as by HINCRBY).
  local i = w.at[field]
  if i then
    w.flat[i] = value
  else
    local flat = w.flat
    flat[#flat + 1] = field
    flat[#flat + 1] = value
    w.at[field] = #flat
  end
end
local function put(w, field, value)
  local sets = w.sets
  sets[#sets + 1] = field
  sets[#sets + 1] = value
  w.written[field] = true
  w.gone[field] = nil
  show(w, field, value)
end
local function drop(w, field)
  if not w.written[field] and w.h[field] ~= nil then w.gone[field] = true end
end
local function result(w)
  -- The record as HGETALL would list it after the writes.
  if next(w.gone) == nil then return w.flat end
  local out, flat, gone = {}, w.flat, w.gone
  for i = 1, #flat, 2 do
    if not gone[flat[i]] then
      out[#out + 1] = flat[i]
      out[#out + 1] = flat[i + 1]
    end
  end
  return out
end
local function commit(w, key)
  if #w.sets > 0 then hset_many(key, w.sets) end
  local gone = {}
  for field in pairs(w.gone) do gone[#gone + 1] = field end
  if #gone > 0 then call('HDEL', key, unpack(gone)) end
  return result(w)
end

local function label_key(name, value)
  -- Label names are free text: the byte length keeps name and value apart unambiguously.
  return P .. 'label:' .. #name .. ':' .. name .. '=' .. value
end

local function unique_field(ns, name, value)
  return ns .. '\t' .. #name .. ':' .. name .. '=' .. value
end

local function labels_of(h)
  local labels = {}
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) == 'l:' then labels[string.sub(f, 3)] = v end
  end
  return labels
end

-- The live indexes a session is in: every find filter has one.
local function index_keys(ns, user, parent, labels)
  local keys = {K.live, P .. 'ns:' .. ns}
  if user then keys[#keys + 1] = P .. 'user:' .. user end
  if parent then keys[#keys + 1] = P .. 'parent:' .. parent end
  for name, value in pairs(labels) do keys[#keys + 1] = label_key(name, value) end
  return keys
end

-- Counts that drop to zero stay in the hash (readers skip them): one command per count, no HDEL
-- (a field per namespace and state ever used, a bounded set).
local function census(ns, state, delta)
  -- (Deltas as text: a Lua number given to redis.call is formatted with %.17g on every call.)
  call('HINCRBY', K.census, ns .. '\t' .. state, delta)
end

local function release_unique(ns, labels, sid)
  for name, value in pairs(labels) do
    local field = unique_field(ns, name, value)
    if call('HGET', K.uniq, field) == sid then call('HDEL', K.uniq, field) end
  end
end

local function deadline(ca, la, it, ttl, ar)
  -- sessionhub._models.expires_at, in the same double arithmetic.
  local idle = nil
  if it ~= nil and ar <= 0 then idle = la + it end
  local cap = nil
  if ttl ~= nil then cap = ca + ttl end
  if idle == nil then return cap end
  if cap == nil then return idle end
  return math.min(idle, cap)
end

-- The deadline index holds at most one entry per session, whose score the session keeps in its
-- 'dq' field. Activity only moves deadlines later, so it leaves the entry alone: when the entry
-- comes due, claim_expired finds the real deadline later and queues it again. Only a deadline
-- earlier than the queued one (a shorter ttl, requests released) writes the index, which keeps
-- touch, data and history writes on the session's own keys.
local function schedule(w, sid, dq, ea, score)
  if ea ~= nil and (dq == nil or ea < tonumber(dq)) then
    call('ZADD', K.deadlines, score, sid)
    put(w, 'dq', score)
  end
end

-- An event, its snapshot packed (args[2] is the stream's approximate maximum length). The stream
-- is trimmed at every TRIM_EVERY-th event appended under the prefix, not at each: XADD's MAXLEN
-- costs about 2,000 instructions (a tenth of a create's commands: its options parsed, the length
-- looked at) to remove, approximately, a node of 100 entries now and then. So the stream holds up
-- to TRIM_EVERY entries more than a trim at each event would leave (which, whole nodes at a time,
-- is already within one node above the length).
local function append_event(kind, at, snapshot)
  local untrimmed = K.untrimmed + 1
  if untrimmed < TRIM_EVERY then
    K.untrimmed = untrimmed
    return call('XADD', K.events, '*', 'k', kind, 'a', at, 's', snapshot)
  end
  K.untrimmed = 0
  return call('XADD', K.events, 'MAXLEN', '~', ARGV[2], '*',
    'k', kind, 'a', at, 's', snapshot)
end

local function emit(kind, at, flat)
  return append_event(kind, at, cmsgpack.pack(flat))
end

local function take_list(pos, pairs_of)
  -- A counted list of arguments: a count (-1 for none), then the items.
  local n = tonumber(ARGV[pos])
  if n < 0 then return nil, pos + 1 end
  local width = pairs_of and 2 or 1
  local t = {}
  for i = 1, n * width do t[i] = ARGV[pos + i] end
  return t, pos + 1 + n * width
end

local function moved(moves, state)
  for i = 1, #moves, 2 do
    if moves[i] == state then return moves[i + 1] end
  end
  return nil
end

-- The index writes of a group of claims or ends, gathered by key: each key costs one command per
-- group (claim_expired, finish_ends), not one per session. Nothing in a group reads what these
-- writes change before flush() writes them. Without a group (g nil: one claim or end per call,
-- where gathering would only add work) each write goes out at once.
local function gathered()
  return {keys = {}, lists = {}, census = {}, seen = {}}
end
-- One or two values (a member; a score and a member; a field and a value). Lists are found by
-- command, then key: no string built per write and no table of varargs (issue 12: the old
-- 'command key' concatenation and {...} per write were about a third of finish_ends' CPU).
local function gather(g, command, key, a, b)
  if g == nil then
    if b == nil then return call(command, key, a) end
    return call(command, key, a, b)
  end
  local by = g.lists[command]
  if by == nil then
    by = {}
    g.lists[command] = by
  end
  local list = by[key]
  if list == nil then
    list = {}
    by[key] = list
    g.keys[#g.keys + 1] = {command, key, list}
  end
  local n = #list
  list[n + 1] = a
  if b ~= nil then list[n + 2] = b end
end
-- Keys to delete (DEL takes keys only): gathered under the key ''.
local function gather_del(g, ...)
  if g == nil then return call('DEL', ...) end
  for i = 1, select('#', ...) do gather(g, 'DEL', '', (select(i, ...))) end
end
local function flush(g)
  for _, entry in ipairs(g.keys) do
    local command, key, list = entry[1], entry[2], entry[3]
    -- In slices: unpack() of thousands of members would overflow the Lua C stack.
    for i = 1, #list, 200 do
      local j = math.min(i + 199, #list)
      if key == '' then  -- a command of keys only (DEL)
        call(command, unpack(list, i, j))
      else
        call(command, key, unpack(list, i, j))
      end
    end
  end
  for field, delta in pairs(g.census) do
    if delta ~= 0 then call('HINCRBY', K.census, field, fint(delta)) end
  end
end
local function count(g, ns, state, delta)
  if g == nil then return census(ns, state, delta < 0 and '-1' or '1') end
  local field = ns .. '\t' .. state
  g.census[field] = (g.census[field] or 0) + delta
end

-- A claim is listed in the claims hash under its claimer, so that the claims of a process that
-- stopped heartbeating can be taken over (see claim_expired). (Earlier versions also named the
-- claimer in the record, 'cb', which nothing read: a field fewer to write and to drop.) The
-- session leaves the deadline index ('queued' false: the caller took it out already); its 'dq'
-- field stays until finish_end drops it, harmless meanwhile as nothing schedules a session being
-- ended. Written without a writer (this and finish_end are the hot path of every end): the record
-- is edited in place for the event. Returns the event id alone: the caller reads the claimed
-- record from the event's snapshot, which its tailer brings anyway (issue 12: replying with the
-- record cost Redis about as much as reading it).
local function claim(g, sk, h, flat, reason, now, moves, claimer, queued)
  local state = moved(moves, h.st) or h.st
  local v = fint(tonumber(h.v) + 1)
  call('HSET', sk, 'st', state, 'er', reason, 'ua', now, 'v', v)
  gather(g, 'HSET', K.claims, h.id, claimer)
  if state ~= h.st then
    count(g, h.ns, h.st, -1)
    count(g, h.ns, state, 1)
  end
  if queued and h.dq ~= nil then call('ZREM', K.deadlines, h.id) end
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == 'st' then
      flat[i + 1] = state
    elseif f == 'ua' then
      flat[i + 1] = now
    elseif f == 'v' then
      flat[i + 1] = v
    end
  end
  local n = #flat  -- 'er' is new: an unclaimed session has none
  flat[n + 1], flat[n + 2] = 'er', reason
  return emit('transitioned', now, flat)
end

-- was_listed_in_all: only stores of versions before issue 12's second pass listed sessions in
-- 'all' / 'all:<ns>', and only at create; 'ce', written at create, came later, so a record that
-- has it was never listed there and its end or purge leaves those indexes alone (two commands
-- fewer per end without retention).
-- The end of a claimed session (finish_end, and each of finish_ends): it leaves every index,
-- the ended record is kept until 'keep_until' (or deleted now) and the 'ended' event sent. The
-- index writes go into the group 'g', written by flush().
local function finish(g, sk, now, state, keep_until)
  local h, flat = load(sk)
  if h == nil or h.en ~= nil or h.er == nil or (g and g.seen[h.id]) then return false end
  local sid = h.id
  if g then g.seen[sid] = true end  -- its record is deleted at the flush: not twice in a group
  local labels = labels_of(h)
  for _, key in ipairs(index_keys(h.ns, h.u, h.p, labels)) do gather(g, 'ZREM', key, sid) end
  release_unique(h.ns, labels, sid)
  count(g, h.ns, h.st, -1)
  gather(g, 'HDEL', K.claims, sid)
  -- The ended record: claim fields and the deadline go ('dq' included: claim left it, its index
  -- entry is gone already), the end is written.
  local v = fint(tonumber(h.v) + 1)
  local new, gone = {}, {}
  for i = 1, #flat, 2 do
    local f, value = flat[i], flat[i + 1]
    if f == 'cb' or f == 'ea' or f == 'dq' then
      gone[#gone + 1] = f
    else
      if f == 'st' then
        value = state
      elseif f == 'ua' then
        value = now
      elseif f == 'ar' then
        value = '0'
      elseif f == 'v' then
        value = v
      end
      new[#new + 1] = f
      new[#new + 1] = value
    end
  end
  new[#new + 1] = 'en'
  new[#new + 1] = now
  if h.ar == nil then
    new[#new + 1] = 'ar'
    new[#new + 1] = '0'
  end
  if tonumber(keep_until) > tonumber(now) then
    if h.ret == nil then  -- the record states how long it is kept (stores._base.kept_for)
      local ret = fnum(tonumber(keep_until) - tonumber(now))
      new[#new + 1] = 'ret'
      new[#new + 1] = ret
      call('HSET', sk, 'st', state, 'en', now, 'ua', now, 'v', v, 'ret', ret)
    else
      call('HSET', sk, 'st', state, 'en', now, 'ua', now, 'v', v)
    end
    -- Requests in flight end with the session (a record without 'ar' has none, as finish_known
    -- leaves it; the snapshot lists 'ar' as the store's encoding of a session does).
    if h.ar ~= nil and h.ar ~= '0' then call('HSET', sk, 'ar', '0') end
    if #gone > 0 then call('HDEL', sk, unpack(gone)) end
    gather(g, 'ZADD', K.retained, keep_until, sid)
    gather(g, 'ZADD', K.ended, '0', sid)
    gather(g, 'ZADD', P .. 'ended:' .. h.ns, '0', sid)
  else
    if h.ce == nil then  -- (see was_listed_in_all)
      gather(g, 'ZREM', K.all, sid)
      gather(g, 'ZREM', P .. 'all:' .. h.ns, sid)
    end
    gather_del(g, sk, dkey(sid), hkey(sid), hckey(sid))
  end
  return {emit('ended', now, new), new}
end

-- The end of a session whose claimed record the caller holds (the reply of its claim). A claimed
-- record does not change (every write refuses it; a takeover rewrites at most 'cb', which the end
-- drops), so the caller sends what finish would read from it and the 'ended' event's snapshot
-- packed: the function reads three fields, not the record, builds no table of it, packs nothing
-- and replies with the event id alone (issue 12: reading the record back, the tables and the pack
-- were most of finish's CPU besides its commands). The caller's copy is trusted only at the
-- version it was claimed at: a record changed behind the claim (by hand, by another version) is
-- ended by finish from what is stored (at that version of that session, by its creation time: it
-- is claimed and not ended, as claims and ends bump the version). ARGV from 'pos': version,
-- created at (as stored), the ended version, state,
-- namespace, user, parent ('' none), snapshot, the retention to write ('' none: see finish), how
-- it is kept ('' not: deleted; 'k' kept; 'a' kept, and 'ar' written '0'), labels (counted
-- pairs): nothing the caller knows is parsed or formatted here. Returns the event id, false (not
-- claimed, ended, or earlier in this group) or nil (changed: the caller runs finish), and the
-- next position.
local function finish_known(g, sid, now, state, keep_until, pos)
  local n = tonumber(ARGV[pos + 10])
  local after = pos + 11 + 2 * n
  local sk = skey(sid)
  if g and g.seen[sid] then return false, after end
  local cur = call('HMGET', sk, 'v', 'ca', 'cb', 'ce')
  if cur[1] ~= ARGV[pos] or cur[2] ~= ARGV[pos + 1] then return nil, after end
  if g then g.seen[sid] = true end
  pos = pos + 1  -- (past created at)
  local ns, u, p = ARGV[pos + 3], ARGV[pos + 4], ARGV[pos + 5]
  gather(g, 'ZREM', K.live, sid)
  gather(g, 'ZREM', P .. 'ns:' .. ns, sid)
  if u ~= '' then gather(g, 'ZREM', P .. 'user:' .. u, sid) end
  if p ~= '' then gather(g, 'ZREM', P .. 'parent:' .. p, sid) end
  for i = pos + 10, after - 1, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    gather(g, 'ZREM', label_key(name, value), sid)
    local field = unique_field(ns, name, value)
    if call('HGET', K.uniq, field) == sid then call('HDEL', K.uniq, field) end
  end
  count(g, ns, ARGV[pos + 2], -1)
  gather(g, 'HDEL', K.claims, sid)
  local kept = ARGV[pos + 8]
  if kept ~= '' then
    local v, ret = ARGV[pos + 1], ARGV[pos + 7]
    if kept == 'a' and ret ~= '' then
      call('HSET', sk, 'st', state, 'en', now, 'ua', now, 'v', v, 'ar', '0', 'ret', ret)
    elseif kept == 'a' then
      call('HSET', sk, 'st', state, 'en', now, 'ua', now, 'v', v, 'ar', '0')
    elseif ret ~= '' then
      call('HSET', sk, 'st', state, 'en', now, 'ua', now, 'v', v, 'ret', ret)
    else
      call('HSET', sk, 'st', state, 'en', now, 'ua', now, 'v', v)
    end
    if cur[3] then  -- 'cb': claims of earlier versions
      call('HDEL', sk, 'ea', 'dq', 'cb')
    else
      call('HDEL', sk, 'ea', 'dq')
    end
    gather(g, 'ZADD', K.retained, keep_until, sid)
    gather(g, 'ZADD', K.ended, '0', sid)
    gather(g, 'ZADD', P .. 'ended:' .. ns, '0', sid)
  else
    if not cur[4] then  -- (see was_listed_in_all)
      gather(g, 'ZREM', K.all, sid)
      gather(g, 'ZREM', P .. 'all:' .. ns, sid)
    end
    gather_del(g, sk, dkey(sid), hkey(sid), hckey(sid))
  end
  return append_event('ended', now, ARGV[pos + 6]), after
end

-- One end of finish_end / finish_ends at ARGV[pos]: session id, retain until, then the claimed
-- record's part (see finish_known), or '' when the caller does not hold it. Returns the reply
-- (an event id; {event id, record}; false) and the next position.
local function finish_at(g, pos, now, state)
  local sid, keep_until = ARGV[pos], ARGV[pos + 1]
  if ARGV[pos + 2] == '' then return finish(g, skey(sid), now, state, keep_until), pos + 3 end
  local reply, after = finish_known(g, sid, now, state, keep_until, pos + 2)
  if reply == nil then reply = finish(g, skey(sid), now, state, keep_until) end
  return reply, after
end

-- Data and history writes are activity: slide the idle deadline like a touch.
-- A session claimed for its end ('er' set) accepts no activity. The fields refresh needs, as
-- HMGET lists them (v en er it ttl ca ar dq ea): no table of names is built from them (issue 12:
-- the table was about a tenth of a history pop), and the id, needed only to queue a deadline, is
-- taken from the key then. Every record has 'v'.
local function live_fields(sk)
  local h = call('HMGET', sk, 'v', 'en', 'er', 'it', 'ttl', 'ca', 'ar', 'dq', 'ea')
  if not h[1] or h[2] then fail('NOTFOUND') end
  if h[3] then fail('ENDING') end
  return h
end

-- The session id of its record's key, 'P s:{<id>}'.
local function sid_of(sk) return string.sub(sk, #P + 4, -2) end

-- Activity on a session (data and history writes): as touch, one HSET of the fields that change,
-- without the writer's tables (its setup was most of a history write's Lua). 'h' is live_fields'.
local function refresh(sk, h, now)
  local v = fint(tonumber(h[1]) + 1)
  local it, ttl = h[4], h[5]
  local ea = nil
  if it or ttl then  -- (the Agents SDK adapter's sessions have neither)
    ea = deadline(tonumber(h[6]), tonumber(now), tonumber(it), tonumber(ttl), tonumber(h[7] or '0'))
  end
  if ea == nil then
    call('HSET', sk, 'la', now, 'ua', now, 'v', v)
    if h[9] then call('HDEL', sk, 'ea') end
    return
  end
  local score = fnum(ea)
  local dq = h[8]
  if dq and ea >= tonumber(dq) then  -- queued no later: the entry stays (schedule)
    call('HSET', sk, 'la', now, 'ua', now, 'v', v, 'ea', score)
    return
  end
  call('ZADD', K.deadlines, score, sid_of(sk))
  call('HSET', sk, 'la', now, 'ua', now, 'v', v, 'ea', score, 'dq', score)
end

-- Reads see live sessions and ended ones retained past 'now' (the end of retention is the score
-- finish_end gave the 'retained' index), even before purge removes them.
local function readable(sk, now)
  local h = call('HMGET', sk, 'id', 'en')  -- no table of fields: reads are the hot path
  if not h[1] then fail('NOTFOUND') end
  if h[2] then
    local kept = call('ZSCORE', K.retained, h[1])
    if not kept or tonumber(kept) <= tonumber(now) then fail('NOTFOUND') end
  end
end

-- A create's record sent whole as a RESTORE payload (the first byte of RDB's listpack hash type,
-- 16, which no field name begins with): RESTORE writes it in one command, for about a tenth of
-- what the HSET of its fields cost (see the store's _hash_dump), and refuses a key that exists,
-- which is the create's duplicate check. Refused otherwise (an ACL without RESTORE), it writes
-- nothing: the caller sends the fields instead.
local function restorable(payload) return payload ~= nil and string.byte(payload, 1) == 16 end
local function restore(sk, payload)
  local done = redis.pcall('RESTORE', sk, '0', payload)
  if type(done) == 'table' and done.err then
    if string.sub(done.err, 1, 7) == 'BUSYKEY' then fail('DUPID') end
    fail('NORESTORE', done.err)
  end
end

-- A new session, after create's checks: its record, index entries, census count and 'created'
-- event (whose id is returned). The record comes from the arguments from 'rec' on: the values of
-- its fields id, ns, st and ca, then either the record whole as a RESTORE payload (restored by the
-- caller: 'versioned' nil; see `restore`) followed by its label pairs, or its other fields as
-- pairs but for 'u' and 'ea' (the user and the deadline, given apart; 'dq', the deadline entry's
-- score, is the deadline too), and but for 'ua', 'la', 'ar' and 'v' when they hold what a new
-- record does (ca, ca, 0, 1): a later pair of one HSET wins. 'ar' (requests in flight) is written
-- only when not 0: every version reads a record without it as 0 (a field fewer to write, and for
-- `get` to read). Built straight from the arguments, in slices (unpack's limit on the Lua stack):
-- tables of the record and packing the snapshot were most of create's CPU, and each argument
-- costs (Redis makes every one a Lua string), so nothing is sent twice. The fields the hot paths
-- look up come first, since Redis finds a field of a small hash by walking it from the start
-- (touch and claim_end read v, ce and dq, then write la, ua, ea, st); 'versioned': 'v' is
-- written here (else the caller's duplicate check wrote it). The labels are the record's last
-- fields ('l:<name>' pairs: the label index entries are made from them, so they are sent once);
-- 'uniq' is the position of the counted unique label pairs (nil: none). 'ce' tells incarnations
-- of an id apart (a session ended and created again under it, even at the same time by an
-- injected clock): a restored record's is the caller's (its instance and a count), else it is
-- the id of the session's 'created' event; it tells a copy a store instance holds of the session
-- from one of an earlier incarnation (see touch).
local function record_head(sk, versioned, ...)
  if versioned then call('HSET', sk, 'v', '1', ...) else call('HSET', sk, ...) end
end
local function created(sk, versioned, u, p, ea, snapshot, uniq, rec)
  local sid, ns, st, ca = ARGV[rec], ARGV[rec + 1], ARGV[rec + 2], ARGV[rec + 3]
  local ce = append_event('created', ca, snapshot)
  if versioned ~= nil then
    local pos = rec + 4
    local last = math.min(pos + 199, #ARGV)
    if u ~= '' and ea ~= '' then
      record_head(sk, versioned, 'ce', ce, 'ca', ca, 'dq', ea, 'ea', ea, 'la', ca, 'ua', ca,
        'st', st, 'id', sid, 'ns', ns, 'u', u, unpack(ARGV, pos, last))
    elseif u ~= '' then
      record_head(sk, versioned, 'ce', ce, 'ca', ca, 'la', ca, 'ua', ca, 'st', st, 'id', sid,
        'ns', ns, 'u', u, unpack(ARGV, pos, last))
    elseif ea ~= '' then
      record_head(sk, versioned, 'ce', ce, 'ca', ca, 'dq', ea, 'ea', ea, 'la', ca, 'ua', ca,
        'st', st, 'id', sid, 'ns', ns, unpack(ARGV, pos, last))
    else
      record_head(sk, versioned, 'ce', ce, 'ca', ca, 'la', ca, 'ua', ca, 'st', st, 'id', sid,
        'ns', ns, unpack(ARGV, pos, last))
    end
    pos = last + 1
    while pos <= #ARGV do
      last = math.min(pos + 199, #ARGV)
      call('HSET', sk, unpack(ARGV, pos, last))
      pos = last + 1
    end
  end
  if ea ~= '' then call('ZADD', K.deadlines, ea, sid) end
  call('ZADD', K.live, '0', sid)
  call('ZADD', P .. 'ns:' .. ns, '0', sid)
  if u ~= '' then call('ZADD', P .. 'user:' .. u, '0', sid) end
  if p ~= '' then call('ZADD', P .. 'parent:' .. p, '0', sid) end
  local i = #ARGV - 1
  while i >= rec + 4 and string.byte(ARGV[i], 1) == 108 and string.byte(ARGV[i], 2) == 58 do
    call('ZADD', label_key(string.sub(ARGV[i], 3), ARGV[i + 1]), '0', sid)  -- 'l:'
    i = i - 2
  end
  if uniq then
    for i = uniq + 1, rec - 1, 2 do
      call('HSET', K.uniq, unique_field(ns, ARGV[i], ARGV[i + 1]), sid)
    end
  end
  census(ns, st, '1')
  return ce
end
"""

# keys: session. args: prefix, maxlen, user, deadline ('' for none), the event's snapshot
# (MessagePack of the record's fields, packed by the caller), then the record (see `created`).
# A session without a parent, limits or unique labels: the duplicate check is the write of the
# record itself (RESTORE, or, for the fields' form, the HSETNX of 'v': every record has one), so
# this create runs one command fewer than create_checked and is sent four arguments fewer.
_CREATE = r"""
local sk = KEYS[1]
-- (pcall: a key of another type under the id, which no store writes, counts as taken, as
-- create_checked's EXISTS counts it, rather than failing the call)
if restorable(ARGV[10]) then
  restore(sk, ARGV[10])
  return created(sk, nil, ARGV[3], '', ARGV[4], ARGV[5], nil, 6)
end
if redis.pcall('HSETNX', sk, 'v', '1') ~= 1 then fail('DUPID') end
return created(sk, false, ARGV[3], '', ARGV[4], ARGV[5], nil, 6)
"""

# keys: session. args: prefix, maxlen, max_sessions, max_per_user, user, parent ('' for none),
# deadline ('' for none), the event's snapshot, unique labels the session has (counted pairs),
# then the record (see `created`). Refusals come in the order one node's
# checks make them (the Cluster store reports the same): an id that exists, a missing or ending
# parent, capacity, quota, a unique label held.
_CREATE_CHECKED = r"""
local sk = KEYS[1]
local u, p = ARGV[5], ARGV[6]
local uniq = 9
local rec = uniq + 1 + 2 * tonumber(ARGV[uniq])
local sid, ns = ARGV[rec], ARGV[rec + 1]
if call('EXISTS', sk) == 1 then fail('DUPID') end
if p ~= '' then
  local parent = fields(skey(p), {'id', 'en', 'er'})
  if parent.id == nil or parent.en ~= nil then fail('NOTFOUND', p) end
  if parent.er ~= nil then fail('PARENTENDING', p) end
end
local max_sessions = tonumber(ARGV[3])
if max_sessions and call('ZCARD', K.live) >= max_sessions then fail('CAPACITY') end
local max_user = tonumber(ARGV[4])
if max_user and u ~= '' then
  local owned = call('ZCARD', P .. 'user:' .. u)
  if owned >= max_user then fail('QUOTA', owned) end
end
for i = uniq + 1, rec - 1, 2 do
  local holder = call('HGET', K.uniq, unique_field(ns, ARGV[i], ARGV[i + 1]))
  if holder and holder ~= sid then fail('DUPLABEL', ARGV[i], ARGV[i + 1], holder, ns) end
end
if restorable(ARGV[rec + 4]) then
  restore(sk, ARGV[rec + 4])
  return created(sk, nil, u, p, ARGV[7], ARGV[8], uniq, rec)
end
return created(sk, true, u, p, ARGV[7], ARGV[8], uniq, rec)
"""

# args: prefix, maxlen, now, expected version, event, touch, requests, max_requests, max_labels,
# max_details_bytes, idle_timeout, ttl, parent ('k' keep, 'n' none, '=' .. value), emit kind,
# then counted lists: moves (pairs), labels set (pairs), labels removed, details set (pairs of
# JSON-encoded key, JSON value), details removed (JSON-encoded keys), unique names, counters (pairs).
_MODIFY = r"""
local sk = KEYS[1]
local now = ARGV[3]
local moves, labels_set, labels_del, details_set, details_del, uniq, counters
local pos = 15
moves, pos = take_list(pos, true)
labels_set, pos = take_list(pos, true)
labels_del, pos = take_list(pos, false)
details_set, pos = take_list(pos, true)
details_del, pos = take_list(pos, false)
uniq, pos = take_list(pos, false)
counters, pos = take_list(pos, true)

local h, flat = load(sk)
if h == nil or h.en ~= nil then fail('NOTFOUND') end
if h.er ~= nil then fail('ENDING') end
local sid = h.id
local version = tonumber(h.v)
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= version then fail('VERSION', h.v) end

local state = h.st
if moves then
  state = moved(moves, h.st)
  if state == nil then
    local event = ARGV[5]
    if event == '' then event = '?' end
    fail('TRANSITION', h.st, event)
  end
end

local labels_changed = #labels_set > 0 or #labels_del > 0
local old_labels, new_labels
if labels_changed then
  old_labels = labels_of(h)
  new_labels = {}
  for k, v in pairs(old_labels) do new_labels[k] = v end
  for _, k in ipairs(labels_del) do new_labels[k] = nil end
  for i = 1, #labels_set, 2 do new_labels[labels_set[i]] = labels_set[i + 1] end
  local n = 0
  for _ in pairs(new_labels) do n = n + 1 end
  local max_labels = tonumber(ARGV[9])
  if max_labels and n > max_labels then fail('LABELS', n) end
  for _, name in ipairs(uniq) do
    local value = new_labels[name]
    if value then
      local holder = call('HGET', K.uniq, unique_field(h.ns, name, value))
      if holder and holder ~= sid then fail('DUPLABEL', name, value, holder, h.ns) end
    end
  end
end

local details_changed = #details_set > 0 or #details_del > 0
local max_details = tonumber(ARGV[10])
if details_changed and max_details then
  -- The size of the merged object as msgspec encodes it: {"k":v,...} without spaces.
  local merged = {}
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) == 'd:' then merged[string.sub(f, 3)] = v end
  end
  for _, k in ipairs(details_del) do merged[k] = nil end
  for i = 1, #details_set, 2 do merged[details_set[i]] = details_set[i + 1] end
  local size, n = 2, 0
  for k, v in pairs(merged) do
    size = size + #k + 1 + #v
    n = n + 1
  end
  if n > 1 then size = size + n - 1 end
  if size > max_details then fail('DETAILS', size) end
end

local requests = tonumber(h.ar or '0') + tonumber(ARGV[7])
local max_requests = tonumber(ARGV[8])
if tonumber(ARGV[7]) > 0 and max_requests and requests > max_requests then
  fail('TOOMANY', h.ar or '0')
end

-- Every check passed but the counters': from here on the function only writes.
local w = writer(h, flat)
-- HINCRBY, not Lua arithmetic: counters are exact signed 64-bit integers (Lua numbers are
-- doubles), and HINCRBY refuses an overflow without writing. Counters go first, so one that
-- overflows undoes the others and the function fails having changed nothing.
for i = 1, #counters, 2 do
  local field = 'c:' .. counters[i]
  local reply = redis.pcall('HINCRBY', sk, field, counters[i + 1])
  if type(reply) == 'table' and reply.err then
    for j = 1, i - 2, 2 do
      local done = 'c:' .. counters[j]
      if h[done] == nil then call('HDEL', sk, done) else call('HSET', sk, done, h[done]) end
    end
    fail('OVERFLOW', counters[i], h[field] or '0', counters[i + 1])
  end
  show(w, field, call('HGET', sk, field))  -- the exact text, not the double HINCRBY gave
end

local function choose(arg, old)
  if arg == 'k' then return old end
  if arg == 'n' then return nil end
  return string.sub(arg, 2)
end
local it = choose(ARGV[11], h.it)
local ttl = choose(ARGV[12], h.ttl)
local parent = choose(ARGV[13], h.p)
local la = h.la
if ARGV[6] == '1' then la = now end
if requests < 0 then requests = 0 end
local ea = deadline(tonumber(h.ca), tonumber(la), tonumber(it), tonumber(ttl), requests)

if state ~= h.st then put(w, 'st', state) end
local ar = fint(requests)
if ar ~= (h.ar or '0') then put(w, 'ar', ar) end  -- (a record without 'ar' has none in flight)
put(w, 'la', la)
put(w, 'ua', now)
put(w, 'v', fint(version + 1))
for name, value in pairs({it = it, ttl = ttl, p = parent}) do put(w, name, value) end
if it == nil then drop(w, 'it') end
if ttl == nil then drop(w, 'ttl') end
if parent == nil then drop(w, 'p') end
local score = nil
if ea == nil then
  drop(w, 'ea')
else
  score = fnum(ea)
  put(w, 'ea', score)
end
for _, k in ipairs(labels_del) do drop(w, 'l:' .. k) end
for i = 1, #labels_set, 2 do put(w, 'l:' .. labels_set[i], labels_set[i + 1]) end
for _, k in ipairs(details_del) do drop(w, 'd:' .. k) end
for i = 1, #details_set, 2 do put(w, 'd:' .. details_set[i], details_set[i + 1]) end

if labels_changed or parent ~= h.p then
  old_labels = old_labels or labels_of(h)
  new_labels = new_labels or old_labels
  local before, after = {}, {}
  for _, k in ipairs(index_keys(h.ns, h.u, h.p, old_labels)) do before[k] = true end
  for _, k in ipairs(index_keys(h.ns, h.u, parent, new_labels)) do after[k] = true end
  for k in pairs(before) do
    if not after[k] then call('ZREM', k, sid) end
  end
  for k in pairs(after) do
    if not before[k] then call('ZADD', k, '0', sid) end
  end
  if labels_changed then  -- (a change of parent alone leaves the unique labels held)
    release_unique(h.ns, old_labels, sid)
    for _, name in ipairs(uniq) do
      local value = new_labels[name]
      if value then call('HSET', K.uniq, unique_field(h.ns, name, value), sid) end
    end
  end
end
if state ~= h.st then
  census(h.ns, h.st, '-1')
  census(h.ns, state, '1')
end
schedule(w, sid, h.dq, ea, score)
local new = commit(w, sk)
local event_id = ''
if ARGV[14] ~= '' then event_id = emit(ARGV[14], now, new) end
return {event_id, new}
"""

# args: prefix, now, then what the caller knows of the session (nothing) or: its version,
# its 'ce' (see `created`), the new version and the new deadline ('' none, and none
# before). ``modify`` with only a touch (a heartbeat, the hottest write): the same checks and
# writes, without parsing a change or building a writer. A session the caller knows at the stored
# version (of that incarnation: 'ce' tells one created again under the id; a record written before
# 'ce' existed is always read) is neither ended nor claimed
# (those bump the version) and has the fields the caller holds; 'dq', which changes without a
# version, is read. The caller computes the deadline (sessionhub._models.expires_at, the same
# double arithmetic), so the function reads three fields, no record and no table, formats
# nothing, and replies with 1 (issue 12: the HGETALL, its table and the record's reply were most
# of a touch). Otherwise it reads the record and returns the new one.
_TOUCH = r"""
local sk = KEYS[1]
local now = ARGV[2]
if ARGV[3] then
  local cur = call('HMGET', sk, 'v', 'ce', 'dq')
  if cur[1] == ARGV[3] and cur[2] == ARGV[4] then
    local v, ea = ARGV[5], ARGV[6]
    if ea == '' then
      call('HSET', sk, 'la', now, 'ua', now, 'v', v)
    elseif cur[3] and tonumber(ea) >= tonumber(cur[3]) then  -- queued no later (schedule)
      call('HSET', sk, 'la', now, 'ua', now, 'v', v, 'ea', ea)
    else
      call('ZADD', K.deadlines, ea, sid_of(sk))  -- (the id: only here, where it is needed)
      call('HSET', sk, 'la', now, 'ua', now, 'v', v, 'ea', ea, 'dq', ea)
    end
    return 1
  end
end
local flat = call('HGETALL', sk)
local at = {}
for i = 1, #flat, 2 do at[flat[i]] = i + 1 end
if at.id == nil or at.en ~= nil then fail('NOTFOUND') end
if at.er ~= nil then fail('ENDING') end
local it, ttl, ar = at.it, at.ttl, at.ar
if it then it = tonumber(flat[it]) end
if ttl then ttl = tonumber(flat[ttl]) end
if ar then ar = tonumber(flat[ar]) else ar = 0 end
local ea = deadline(tonumber(flat[at.ca]), tonumber(now), it, ttl, ar)
local v = fint(tonumber(flat[at.v]) + 1)
flat[at.la] = now
flat[at.ua] = now
flat[at.v] = v
if ea == nil then
  call('HSET', sk, 'la', now, 'ua', now, 'v', v)
  if at.ea ~= nil then
    call('HDEL', sk, 'ea')
    table.remove(flat, at.ea)
    table.remove(flat, at.ea - 1)
  end
  return flat
end
local score = fnum(ea)
if at.ea then
  flat[at.ea] = score
else
  flat[#flat + 1] = 'ea'
  flat[#flat + 1] = score
end
local dq = at.dq
if dq ~= nil and ea >= tonumber(flat[dq]) then
  call('HSET', sk, 'la', now, 'ua', now, 'v', v, 'ea', score)
  return flat
end
-- Queued earlier than before (see schedule).
call('ZADD', K.deadlines, score, flat[at.id])
call('HSET', sk, 'la', now, 'ua', now, 'v', v, 'ea', score, 'dq', score)
if dq then
  flat[dq] = score
else
  flat[#flat + 1] = 'dq'
  flat[#flat + 1] = score
end
return flat
"""

# keys: session. args: prefix, maxlen, reason, now, claimer, moves (counted pairs), then what the
# caller knows of the session ('' nothing) or: its version, its 'ce' (see `created`), id, state,
# the state claimed, namespace, the version claimed, and the claimed record's snapshot packed.
# When the stored record is at that version of that incarnation ('ce' tells a session created
# again under the same id), nothing else changed either: every write of the record's fields bumps
# the version (claims and ends too, so it is neither claimed nor ended); 'dq', which does not, is
# read. The claim is then written without reading the record, building a table of it or packing it
# (issue 12: those were most of a claim's CPU), and replies with its event id. Otherwise the
# record is read and claimed as ever, and the reply is {event id}: the caller reads the claimed
# record from the event. False when the session is not there to claim.
_CLAIM_END = r"""
local sk = KEYS[1]
local pos = 7 + 2 * math.max(tonumber(ARGV[6]), 0)  -- after the moves
if ARGV[pos] ~= '' then
  local cur = call('HMGET', sk, 'v', 'ce', 'dq')
  if cur[1] == ARGV[pos] and cur[2] == ARGV[pos + 1] then
    local sid, st, state, ns, now = ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4], ARGV[pos + 5],
      ARGV[4]
    call('HSET', sk, 'st', state, 'er', ARGV[3], 'ua', now, 'v', ARGV[pos + 6])
    call('HSET', K.claims, sid, ARGV[5])
    if state ~= st then
      census(ns, st, '-1')
      census(ns, state, '1')
    end
    if cur[3] then call('ZREM', K.deadlines, sid) end
    return append_event('transitioned', now, ARGV[pos + 7])
  end
end
local h, flat = load(sk)
if h == nil or h.en ~= nil or h.er ~= nil then return false end
return {claim(nil, sk, h, flat, ARGV[3], ARGV[4], take_list(6, true), ARGV[5], true)}
"""

# args: prefix, maxlen, now, limit, claimer, sweep ('1' to take over orphaned claims; '2' also
# to hand back this claimer's own claims but those listed after the moves), moves (counted pairs),
# then with '2' the ids the caller is handling (counted). Returns, for each claim, its
# 'transitioned' event's id and the session id (the record is that event's snapshot) or, for a
# taken-over or handed-back claim (its event was sent when it was first claimed), '' and the
# record.
_CLAIM_EXPIRED = r"""
local now = ARGV[3]
local now_n = tonumber(now)
local limit = tonumber(ARGV[4])
local claimer = ARGV[5]
local moves, after = take_list(7, true)
local out, g = {}, gathered()
local sweep = ARGV[6]
if sweep ~= '0' then
  -- Claims whose claimer's heartbeat key expired: that process stopped between claiming and
  -- finishing. Its ends are finished here (hooks may then run again for those sessions: at least
  -- once when a process dies, exactly once otherwise). With '2', also the claims of this claimer
  -- that the caller is not handling: a claim whose reply it never read (the connection dropped
  -- after Redis ran it), which no other process takes over while this one lives.
  local handling = nil
  if sweep == '2' then
    handling = {}
    for i = after + 1, after + tonumber(ARGV[after]) do handling[ARGV[i]] = true end
  end
  local claims = call('HGETALL', K.claims)
  for i = 1, #claims, 2 do
    if #out >= limit then break end
    local sid, holder = claims[i], claims[i + 1]
    local mine = holder == claimer
    if (mine and handling ~= nil and not handling[sid])
      or (not mine and call('EXISTS', P .. 'claimer:' .. holder) == 0) then
      local sk = skey(sid)
      local h, flat = load(sk)
      if h == nil or h.en ~= nil or h.er == nil then
        call('HDEL', K.claims, sid)
      else
        if not mine then call('HSET', K.claims, sid, claimer) end
        out[#out + 1] = {'', flat}
      end
    end
  end
end
-- Earliest first by real deadline. An entry's score is the deadline its session had when queued
-- ('dq'); activity moves the real one ('ea') later without writing the index (see schedule), so an
-- entry may sit earlier than its session is due, never later. A read takes the first entries by
-- score: every entry not read is due at or after the last score read ('bound'; when the read came
-- short, everything due was read and the bound is now). So the sessions read whose real deadline
-- is at most the bound are the earliest due: they are claimed in the order of their real
-- deadlines. A moved one due later than the bound is queued again at its real deadline, where a
-- later read finds it in its place (its record kept, so it is not loaded twice); one not due yet
-- likewise. Each entry moves at most once per call, so every read claims or moves something.
-- Entries read per call are bounded so that one call never blocks Redis for long; what is left
-- stays due and the hub's next pass goes on.
local budget = limit * 4 + 100
local held = {}  -- moved sessions queued again by this call and still due: their records
while #out < limit and budget > 0 do
  local want = math.min(limit - #out, budget, 500)
  local due = call('ZRANGEBYSCORE', K.deadlines, '-inf', now, 'LIMIT', 0, want)
  local n = #due
  if n == 0 then break end
  budget = budget - n
  local bound = now_n  -- (the last score alone: cheaper than a read WITHSCORES)
  if n == want then bound = tonumber(call('ZSCORE', K.deadlines, due[n])) end
  -- The index entries read all leave in one command; the moved ones go back in at the end.
  call('ZREMRANGEBYRANK', K.deadlines, 0, n - 1)
  local ready, sorted, last = {}, true, nil  -- {deadline, key, record, flat}, claimable
  local requeued = {}
  for i = 1, n do
    local sid = due[i]
    local sk = skey(sid)
    local h, flat
    local kept = held[sid]
    if kept then
      h, flat = kept[1], kept[2]
      held[sid] = nil
    else
      h, flat = load(sk)
    end
    if h == nil or h.en ~= nil or h.er ~= nil or h.ea == nil then
      if h ~= nil and h.dq ~= nil then call('HDEL', sk, 'dq') end
    else
      local ea = tonumber(h.ea)
      if ea <= bound then
        if last ~= nil and ea < last then sorted = false end
        last = ea
        ready[#ready + 1] = {ea, sk, h, flat}
      else  -- moved (an exact entry is due by the bound): queue it again where it is due
        requeued[#requeued + 1] = h.ea
        requeued[#requeued + 1] = sid
        call('HSET', sk, 'dq', h.ea)
        if ea <= now_n then
          for j = 1, #flat, 2 do
            if flat[j] == 'dq' then flat[j + 1] = h.ea end
          end
          held[sid] = {h, flat}
        end
      end
    end
  end
  if not sorted then
    table.sort(ready, function(a, b) return a[1] < b[1] end)
  end
  for _, r in ipairs(ready) do
    out[#out + 1] = {claim(g, r[2], r[3], r[4], 'expired', now, moves, claimer, false), r[3].id}
  end
  for i = 1, #requeued, 400 do
    call('ZADD', K.deadlines, unpack(requeued, i, math.min(i + 399, #requeued)))
  end
end
flush(g)
return out
"""

# keys: session. args: prefix, maxlen, now, ended state, then the end (see finish_at).
_FINISH_END = r"""
return (finish_at(nil, 5, ARGV[3], ARGV[4]))
"""

# args: prefix, maxlen, now, ended state, then the ends (see finish_at). The ends of one expiry
# batch in one call (a single Redis: every key in one node): a reply per end, as finish_end's, in
# order.
_FINISH_ENDS = r"""
local now, state = ARGV[3], ARGV[4]
local out, g = {}, gathered()
local pos = 5
while pos <= #ARGV do
  out[#out + 1], pos = finish_at(g, pos, now, state)
end
flush(g)
return out
"""

# args: prefix, then session ids. Those of them with a live child (``P parent:<id>`` exists while
# there is one): one call for an expiry batch instead of an EXISTS each. Most batches hold no
# parent: one EXISTS of many keys (it counts those that exist) tells so, per slice of 500 ids
# (issue 12: an EXISTS per session was one command in eight of the expiry path); only a batch
# with some is then looked at id by id.
_HAVING_CHILDREN = r"""
local keys = {}
for i = 2, #ARGV do keys[i - 1] = P .. 'parent:' .. ARGV[i] end
local found = 0
for i = 1, #keys, 500 do
  found = found + call('EXISTS', unpack(keys, i, math.min(i + 499, #keys)))
end
local out = {}
if found == 0 then return out end
for i, key in ipairs(keys) do
  if call('EXISTS', key) == 1 then out[#out + 1] = ARGV[i + 1] end
end
return out
"""

# args: prefix.
_NEXT_DEADLINE = r"""
local first
for _ = 1, 100 do
  first = call('ZRANGE', K.deadlines, 0, 0, 'WITHSCORES')
  if #first == 0 then return false end
  local sid = first[1]
  local sk = skey(sid)
  local h = fields(sk, {'id', 'ea', 'er', 'en'})
  if h.id == nil or h.ea == nil or h.er ~= nil or h.en ~= nil then
    call('ZREM', K.deadlines, sid)
    if h.id ~= nil then call('HDEL', sk, 'dq') end
  elseif tonumber(h.ea) > tonumber(first[2]) then
    call('ZADD', K.deadlines, h.ea, sid)
    call('HSET', sk, 'dq', h.ea)
  else
    return first[2]
  end
end
return first[2]  -- possibly early: the hub then wakes once for nothing
"""

# args: prefix, now, limit.
_PURGE = r"""
local due = call('ZRANGEBYSCORE', K.retained, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local n = 0
for _, sid in ipairs(due) do
  call('ZREM', K.retained, sid)
  local sk = skey(sid)
  local h = fields(sk, {'en', 'ns', 'ce'})
  if h.en ~= nil then
    call('ZREM', K.ended, sid)
    call('ZREM', P .. 'ended:' .. h.ns, sid)
    if h.ce == nil then  -- (see was_listed_in_all)
      call('ZREM', K.all, sid)
      call('ZREM', P .. 'all:' .. h.ns, sid)
    end
    call('DEL', sk, dkey(sid), hkey(sid), hckey(sid))
    n = n + 1
  end
end
-- Census counts left at 0 (writers never delete them: one HINCRBY), a slice per call from the
-- store's cursor (ARGV[4]; '' skips it): an app that uses many namespaces over time does not keep
-- a field for each one it ever used. Atomic here, so a count is deleted only while it is 0.
local cursor = ''
if ARGV[4] ~= nil and ARGV[4] ~= '' then
  local scan = call('HSCAN', K.census, ARGV[4], 'COUNT', 100)
  local found = scan[2]
  for i = 1, #found, 2 do
    if found[i + 1] == '0' then call('HDEL', K.census, found[i]) end
  end
  cursor = scan[1]
end
return {n, #due, cursor}
"""

# args: prefix, mode ('find' or 'count'), limit, cursor, namespace, user, parent, state,
# include_ended ('1'/'0'), labels (counted pairs). Empty strings mean "no filter".
_FIND = r"""
local counting = ARGV[2] == 'count'
local limit = tonumber(ARGV[3])
local cursor, ns, user, parent, state = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local include_ended = ARGV[9] == '1'
local labels = take_list(10, true)

local narrow = {}
if user ~= '' then narrow[#narrow + 1] = P .. 'user:' .. user end
if parent ~= '' then narrow[#narrow + 1] = P .. 'parent:' .. parent end
for i = 1, #labels, 2 do narrow[#narrow + 1] = label_key(labels[i], labels[i + 1]) end

-- The indexes whose union holds every match, in id order. With filters of their own, the narrowest
-- (live sessions only, as ever). Otherwise the live index, and with include_ended the retained
-- ended sessions too ('ended', written when a session ends with a retention), and 'all' if it
-- exists: a store of an earlier version listed live and retained sessions there, written at create
-- (two index writes per create that most sessions, ended without retention, never needed).
local sources
if #narrow > 0 then
  local best = nil
  for _, key in ipairs(narrow) do
    local n = call('ZCARD', key)
    if best == nil or n < best then
      best = n
      sources = {key}
    end
  end
else
  local suffix = ''
  if ns ~= '' then suffix = ':' .. ns end
  sources = {P .. (ns ~= '' and 'ns' or 'live') .. suffix}
  if include_ended then
    sources[2] = K.ended .. suffix
    if call('EXISTS', K.all .. suffix) == 1 then sources[3] = K.all .. suffix end
  end
end

-- Counting needs no reads when the indexes are exactly the query (live and ended are disjoint;
-- 'all' overlaps both).
if counting and state == '' and #sources < 3 and (#narrow == 0 or (#narrow == 1 and ns == '')) then
  local n = 0
  for _, key in ipairs(sources) do n = n + call('ZCARD', key) end
  return n
end

-- Byte order (Lua's '<' on strings follows the server's locale), for merging the indexes.
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local from = '-'
if cursor ~= '' then from = '(' .. cursor end
local streams = {}
for i, key in ipairs(sources) do streams[i] = {key = key, from = from, ids = {}, at = 1} end
local function head(s)
  if s.at > #s.ids then
    if s.from == nil then return nil end
    s.ids = call('ZRANGEBYLEX', s.key, s.from, '+', 'LIMIT', 0, 256)
    s.at = 1
    s.from = nil
    if #s.ids == 256 then s.from = '(' .. s.ids[256] end
  end
  return s.ids[s.at]
end
local function next_id()
  -- The lowest id at the head of any index; taken from every index that has it.
  local low = nil
  for _, s in ipairs(streams) do
    local sid = head(s)
    if sid ~= nil and (low == nil or before(sid, low)) then low = sid end
  end
  if low ~= nil then
    for _, s in ipairs(streams) do
      if s.ids[s.at] == low then s.at = s.at + 1 end
    end
  end
  return low
end

local out = {}
local count = 0
while true do
  local sid = next_id()
  if sid == nil then break end
  local h, flat = load(skey(sid))
  local ok = h ~= nil
    and (ns == '' or h.ns == ns)
    and (user == '' or h.u == user)
    and (parent == '' or h.p == parent)
    and (state == '' or h.st == state)
    and (include_ended or h.en == nil)
  if ok then
    for i = 1, #labels, 2 do
      if h['l:' .. labels[i]] ~= labels[i + 1] then ok = false end
    end
  end
  if ok then
    if counting then
      count = count + 1
    else
      out[#out + 1] = flat
      if #out > limit then return out end
    end
  end
end
if counting then return count end
return out
"""

# keys: session, data. args: prefix, key, now.
_DATA_GET = r"""
readable(KEYS[1], ARGV[3])
return call('HGET', KEYS[2], ARGV[2])
"""

_DATA_VERSION = r"""
local function data_version(raw)
  if not raw then return 0 end
  return tonumber(string.sub(raw, 1, string.find(raw, ':', 1, true) - 1))
end
"""

# keys: session, data. args: prefix, key, value, expected version, now. Values are kept as
# "<version>:<json>".
_DATA_SET = r"""
local h = live_fields(KEYS[1])
local version = data_version(call('HGET', KEYS[2], ARGV[2]))
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= version then fail('DATAVERSION', version) end
call('HSET', KEYS[2], ARGV[2], fint(version + 1) .. ':' .. ARGV[3])
refresh(KEYS[1], h, ARGV[5])
return version + 1
"""

# keys: session, data. args: prefix, key, expected version, now.
_DATA_DELETE = r"""
local h = live_fields(KEYS[1])
local raw = call('HGET', KEYS[2], ARGV[2])
local version = data_version(raw)
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= version then fail('DATAVERSION', version) end
if not raw then return 0 end
call('HDEL', KEYS[2], ARGV[2])
refresh(KEYS[1], h, ARGV[4])
return 1
"""

# keys: session, data. args: prefix, now.
_DATA_ITEMS = r"""
readable(KEYS[1], ARGV[2])
return call('HGETALL', KEYS[2])
"""

# keys: session, history, history counts. args: prefix, kind, payload, now. Records are kept as
# "<kind>\t<at>\t<json>" (kinds are names without tabs; JSON escapes its tabs).
_HISTORY_APPEND = r"""
local h = live_fields(KEYS[1])
local seq = call('RPUSH', KEYS[2], ARGV[2] .. '\t' .. ARGV[4] .. '\t' .. ARGV[3])
call('HINCRBY', KEYS[3], ARGV[2], 1)
refresh(KEYS[1], h, ARGV[4])
return seq
"""

# keys: session, history. args: prefix, after, limit, newest first, kind, now. Returns, without a
# kind, the first record's seq and the records (consecutive, oldest first); with a kind, seq, record
# pairs.
_HISTORY_READ = r"""
readable(KEYS[1], ARGV[6])
local limit = tonumber(ARGV[3])
local kind = ARGV[5]
local n = call('LLEN', KEYS[2])
if kind == '' then
  -- One LRANGE, returned as it came: the caller numbers and orders the records (a Lua loop
  -- building pairs cost more than the read).
  local lo, hi
  if ARGV[4] == '1' then
    hi = n - 1
    if ARGV[2] ~= '' then hi = math.min(tonumber(ARGV[2]) - 1, n) - 1 end
    lo = math.max(hi - limit + 1, 0)
  else
    lo = 0
    if ARGV[2] ~= '' then lo = math.max(tonumber(ARGV[2]), 0) end
    hi = math.min(lo + limit - 1, n - 1)
  end
  if limit < 1 or hi < lo then return {0, {}} end
  return {lo + 1, call('LRANGE', KEYS[2], lo, hi)}
end
local tag = kind .. '\t'
local out = {}
local chunk = 256
if kind == '' then chunk = limit end
local function take(index, record)
  if kind == '' or string.sub(record, 1, #tag) == tag then
    out[#out + 1] = index + 1
    out[#out + 1] = record
  end
  return #out >= 2 * limit
end
if ARGV[4] == '1' then
  local start = n
  if ARGV[2] ~= '' then start = math.min(tonumber(ARGV[2]) - 1, n) end
  local i = start - 1
  while i >= 0 do
    local lo = math.max(i - chunk + 1, 0)
    local records = call('LRANGE', KEYS[2], lo, i)
    for j = #records, 1, -1 do
      if take(lo + j - 1, records[j]) then return out end
    end
    i = lo - 1
  end
else
  local i = 0
  if ARGV[2] ~= '' then i = math.max(tonumber(ARGV[2]), 0) end
  while i < n do
    local hi = math.min(i + chunk - 1, n - 1)
    local records = call('LRANGE', KEYS[2], i, hi)
    for j = 1, #records do
      if take(i + j - 1, records[j]) then return out end
    end
    i = hi + 1
  end
end
return out
"""

# keys: session, history counts. args: prefix, now.
_HISTORY_COUNTS = r"""
readable(KEYS[1], ARGV[2])
return call('HGETALL', KEYS[2])
"""

_BODIES: dict[str, str] = {
    "create": _CREATE,
    "create_checked": _CREATE_CHECKED,
    "modify": _MODIFY,
    "touch": _TOUCH,
    "claim_end": _CLAIM_END,
    "claim_expired": _CLAIM_EXPIRED,
    "finish_end": _FINISH_END,
    "next_deadline": _NEXT_DEADLINE,
    "purge": _PURGE,
    "find": _FIND,
    "data_get": _DATA_GET,
    "data_set": _DATA_SET,
    "data_delete": _DATA_DELETE,
    "data_items": _DATA_ITEMS,
    "history_append": _HISTORY_APPEND,
    "history_read": _HISTORY_READ,
    "history_counts": _HISTORY_COUNTS,
}

# keys: session, history, history counts. args: prefix, now, then kind, payload pairs. The
# records get consecutive seqs: one RPUSH.
_HISTORY_APPEND_MANY = r"""
local h = live_fields(KEYS[1])
local now = ARGV[2]
local first = call('LLEN', KEYS[2]) + 1
local records = {}
for i = 3, #ARGV, 2 do
  records[#records + 1] = ARGV[i] .. '\t' .. now .. '\t' .. ARGV[i + 1]
  call('HINCRBY', KEYS[3], ARGV[i], 1)
  if #records == 1000 then  -- unpack's limit on the Lua stack
    call('RPUSH', KEYS[2], unpack(records))
    records = {}
  end
end
if #records > 0 then call('RPUSH', KEYS[2], unpack(records)) end
if #ARGV > 2 then refresh(KEYS[1], h, now) end
return first
"""

# keys: session, history, history counts. args: prefix, kind, marker, now. Pops the top of the
# stack of `kind` records (stores._base.stack_top: the same walk, from the tail); returns the popped
# record's seq and record, or nothing for an empty stack. Records are read two at a time (one
# LRANGE: the record asked for and the one below it, which the walk reads next unless a marker
# sends it further down), so a pop usually reads the last record (a marker) and then the top with
# the record below it; the popped record is the one the walk found, not read again. A marker this
# function wrote is parsed by one anchored match of its exact text; any other marker payload goes
# through cjson, as before. Measured (INFO commandstats, 2-core machine): 11.3-11.6 us of FCALL
# per pop before, 10.8-10.9 us after; most of the rest is the session's refresh (live_fields,
# refresh: ~4 us) and FCALL's own cost (~1.5 us). The refresh then read its fields into a table
# (callgrind, whole server: a pop of a session without timeouts 127k instructions, 105k
# without the table and the deadline's arithmetic; with an idle timeout 145k, 130k).
_HISTORY_POP = r"""
local h = live_fields(KEYS[1])
local hk, kind, marker, now = KEYS[2], ARGV[2], ARGV[3], ARGV[4]
local n = call('LLEN', hk)
local ktag, mtag = kind .. '\t', marker .. '\t'
local next_seq, next_record = 0, nil
local function record_at(seq)
  if seq == next_seq then return next_record end
  if seq == 1 then return call('LINDEX', hk, -n) end
  local pair = call('LRANGE', hk, seq - n - 2, seq - n - 1)
  next_seq, next_record = seq - 1, pair[1]
  return pair[2]
end
local function stack_top(seq)
  local skip = 0
  while seq > 0 do
    local record = record_at(seq)
    if string.sub(record, 1, #ktag) == ktag then
      if skip == 0 then return seq, record end
      skip = skip - 1
      seq = seq - 1
    elseif string.sub(record, 1, #mtag) == mtag then
      -- after the tag: the time (no tab in it), a tab, the payload; JSON numbers have no
      -- leading zeros
      local digits = string.match(record, '^[^\t]*\t{"popped":[1-9]%d*,"below":(%d+)}$',
        #mtag + 1)
      local below
      if digits and (digits == '0' or string.byte(digits) ~= 48) then
        below = tonumber(digits)
      else
        local tab = string.find(record, '\t', #mtag + 1, true)
        local ok, payload = pcall(cjson.decode, string.sub(record, (tab or #record) + 1))
        below = ok and type(payload) == 'table' and payload.below
      end
      if type(below) == 'number' and below >= 0 and below < seq and below == math.floor(below) then
        seq = below
      else
        skip = skip + 1
        seq = seq - 1
      end
    else
      return 0
    end
  end
  return 0
end
local top, popped = stack_top(n)
if top == 0 then return {} end
local below = stack_top(top - 1)
call('RPUSH', hk, mtag .. now .. '\t{"popped":' .. fint(top) .. ',"below":' .. fint(below) .. '}')
call('HINCRBY', KEYS[3], marker, 1)
refresh(KEYS[1], h, now)
return {top, popped}
"""

_BODIES.update(history_append_many=_HISTORY_APPEND_MANY, history_pop=_HISTORY_POP)
_BODIES.update(finish_ends=_FINISH_ENDS, having_children=_HAVING_CHILDREN)


def build_library(
    bodies: Mapping[str, str], name: str, function_prefix: str
) -> tuple[str, str, dict[str, str]]:
    """A Functions library of ``bodies`` (each an operation's Lua, with the shared helpers in
    scope): its code for ``FUNCTION LOAD``, its version (a hash of the code, in every name, so
    hubs of another version load theirs beside it) and each operation's function name."""
    parts = [_LIB, _DATA_VERSION]
    for op, body in bodies.items():
        parts.append(f"local function op_{op}()\n{body}\nend\n")
    parts.append(
        "local function entry(body)\n"
        "  return function(keys, args)\n"
        "    KEYS, ARGV, P, call = keys, args, args[1], redis.call\n"
        "    K = names(P)\n"
        "    return body()\n"
        "  end\n"
        "end\n"
    )
    code = "".join(parts)
    version = hashlib.sha1(code.encode()).hexdigest()[:12]
    names = {op: f"{function_prefix}{version}_{op}" for op in bodies}
    registrations = "".join(
        f"redis.register_function('{names[op]}', entry(op_{op}))\n" for op in bodies
    )
    return f"#!lua name={name}_{version}\n{code}{registrations}", version, names


LIBRARY, VERSION, FUNCTIONS = build_library(_BODIES, "sessionhub", "sh")
"""The library's code for ``FUNCTION LOAD``, its version hash, and each operation's function name."""
