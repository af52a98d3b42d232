//! The Lua scripts that move tasks between a queue's keys. Each runs
//! atomically in Redis, so a task is never in two places (duplicates) nor
//! in none (lost), even with many servers calling at once. Within a script
//! every move writes the task's new place before it removes the old one:
//! if a write fails (out of memory), the script stops with the task still
//! where it was, never with earlier moves replayed.
//!
//! Per-priority streams and per-task hashes are found from the key prefix
//! (`ARGV[1]`); they share the queue's `{hash tag}` with the declared keys,
//! so each script touches one slot, which Redis Cluster also runs.
//!
//! Times are Redis's clock (`TIME`), so due times do not depend on the
//! clocks of the hosts sharing the queue.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

/// A Lua script, run by its SHA1 (EVALSHA) and, when the node does not
/// have it cached, by its body (EVAL, which caches it there too). Not
/// redis-rs's `Script`: that one loads a missing script with SCRIPT LOAD,
/// which a cluster client sends to every master, so one unreachable master
/// would fail a call whose keys live on a healthy one. EVAL goes where the
/// keys live, like EVALSHA.
pub struct Script {
    code: String,
    hash: String,
}

impl Script {
    fn new(code: &str) -> Self {
        Self {
            code: code.to_owned(),
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// A call of this script, to give keys and arguments.
    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Script`] with its keys and arguments.
pub struct Invocation<'a> {
    script: &'a Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation<'_> {
    /// Adds a key (KEYS[n]).
    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds an argument (ARGV[n]); a list adds each item.
    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// Runs it by SHA1, and by body if the node answers NOSCRIPT (a new or
    /// restarted node): at most two round trips, both to the keys' node.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self
            .cmd("EVALSHA", &self.script.hash)
            .query_async(conn)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.cmd("EVAL", &self.script.code).query_async(conn).await
            }
            other => other,
        }
    }

    fn cmd(&self, name: &str, script: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// `local now`: Redis's clock in ms.
const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

fn with_clock(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

/// The first step of submitting a batch: reserves `n` task ids and makes
/// sure each priority level of the batch has its stream and consumer group
/// (read from id 0, so no entry added before the group existed is
/// skipped). KEYS ids counter, priorities; ARGV prefix, group, n, then the
/// batch's distinct priorities. Returns {the first id, Redis's clock}: the
/// tasks are then written in one MULTI transaction, where Redis parses
/// each XADD itself (1.2 µs a task here) instead of Lua building and
/// passing it (5.7 µs a task when this script wrote the tasks too).
pub static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    with_clock(
        "local n = tonumber(ARGV[3])
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
for a = 4, #ARGV do
  local prio = ARGV[a]
  if redis.call('ZADD', KEYS[2], 'NX', prio, prio) == 1 then
    redis.pcall('XGROUP', 'CREATE', ARGV[1] .. ':stream:' .. prio, ARGV[2], '0', 'MKSTREAM')
  end
end
return {first, now}",
    )
});

/// Moves due delayed tasks into their streams, then reads up to `count`
/// never-delivered entries for this consumer, highest priority first.
/// KEYS priorities, delayed; ARGV prefix, group, consumer, count,
/// promote_limit. Each due task is added to its stream and then removed
/// from the delayed set in the same atomic script: two servers promoting
/// at once cannot both move it, and a moved task does not stay behind to
/// be moved again. Returns {entries {priority, id, fields}, next due time
/// or -1, now}.
pub static TAKE: LazyLock<Script> = LazyLock::new(|| {
    with_clock(
        "local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  local key = ARGV[1] .. ':delayed:' .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    local prio = '0'
    for i = 1, #fields, 2 do
      if fields[i] == 'meta' then prio = string.match(fields[i + 1], '^%d+ (%-?%d+)') or '0' end
    end
    redis.call('XADD', ARGV[1] .. ':stream:' .. prio, '*', unpack(fields))
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], id)
end
local out = {}
local want = tonumber(ARGV[4])
for _, prio in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  if want <= 0 then break end
  local stream = ARGV[1] .. ':stream:' .. prio
  local read = {'XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', want, 'STREAMS', stream, '>'}
  local got = redis.pcall(unpack(read))
  if type(got) == 'table' and got.err then
    if string.find(got.err, 'NOGROUP', 1, true) == nil then return redis.error_reply(got.err) end
    redis.call('XGROUP', 'CREATE', stream, ARGV[2], '0', 'MKSTREAM')
    got = redis.call(unpack(read))
  end
  if got then
    for _, e in ipairs(got[1][2]) do
      out[#out + 1] = {prio, e[1], e[2]}
      want = want - 1
    end
  end
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {out, tonumber(first[2]) or -1, now}",
    )
});

/// Reads this consumer's own pending entries of one stream after `cursor`
/// (XREADGROUP with an id, not `>`): what a server that restarted under
/// the same name still owned. KEYS stream; ARGV group, consumer, cursor,
/// count. Entries whose body was deleted are acknowledged and skipped.
/// Returns {{id, fields, deliveries} per entry (the read counts as one
/// more delivery), the last id read or '' when none was left}.
pub static RECOVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local got = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4],
  'STREAMS', KEYS[1], ARGV[3])
if type(got) == 'table' and got.err then
  if string.find(got.err, 'NOGROUP', 1, true) then return {{}, ''} end
  return redis.error_reply(got.err)
end
local out, last = {}, ''
if not got then return {out, last} end
for _, e in ipairs(got[1][2]) do
  last = e[1]
  if e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1, ARGV[2])
    out[#out + 1] = {e[1], e[2], p[1][4]}
  else
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
  end
end
return {out, last}",
    )
});

/// Takes over the entries other consumers left idle for at least
/// `idle_ms`, across all priority streams, up to `count`. KEYS
/// priorities; ARGV prefix, group, consumer, idle_ms, count. It lists
/// them with XPENDING IDLE and claims each with XCLAIM (which checks the
/// idle time again and counts a delivery). Not XAUTOCLAIM: that would
/// also hand a live server its own in-flight entries, to run a second
/// time. Returns {priority, id, fields, deliveries} per entry.
pub static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local out = {}
local want = tonumber(ARGV[5])
for _, prio in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  if want <= 0 then break end
  local stream = ARGV[1] .. ':stream:' .. prio
  local idle = redis.pcall('XPENDING', stream, ARGV[2], 'IDLE', ARGV[4], '-', '+', 1000)
  if type(idle) == 'table' and not idle.err then
    for _, p in ipairs(idle) do
      if want <= 0 then break end
      if p[2] ~= ARGV[3] then
        local got = redis.call('XCLAIM', stream, ARGV[2], ARGV[3], ARGV[4], p[1])
        if #got == 1 and got[1][2] then
          out[#out + 1] = {prio, got[1][1], got[1][2], p[4] + 1}
          want = want - 1
        end
      end
    end
  end
end
return out",
    )
});

/// Refreshes this consumer's in-flight entries of one stream so nobody
/// reclaims them while they run: XCLAIM to itself with min-idle 0 and
/// JUSTID (idle time reset, delivery count unchanged), only for entries it
/// still owns, so it never takes back one another server already
/// reclaimed. KEYS stream; ARGV group, consumer, ids. Returns the ids it
/// no longer owns.
pub static KEEP_ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local lost = {}
for i = 3, #ARGV do
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #mine == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost",
    )
});

/// The part of RETRY and FAIL that checks the entry is still this
/// consumer's and reads its fields (`fields`, `id`), or returns 0.
const OWNED_ENTRY: &str =
    "local mine = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[4], ARGV[4], 1, ARGV[3])
if #mine == 0 then return 0 end
local entry = redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[4])
if #entry == 0 then
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[4])
  return 0
end
local fields = entry[1][2]
local id
for i = 1, #fields, 2 do
  if fields[i] == 'meta' then id = string.match(fields[i + 1], '^(%d+)') end
end
";

/// Moves a delivered entry this consumer owns to the delayed set, to run
/// again after `delay_ms` with `tries` failed runs recorded. KEYS stream,
/// delayed; ARGV prefix, group, consumer, entry id, delay_ms, tries.
/// Returns 1, or 0 if the entry is no longer this consumer's.
pub static RETRY: LazyLock<Script> = LazyLock::new(|| {
    with_clock(&format!(
        "{OWNED_ENTRY}local counted = false
for i = 1, #fields, 2 do
  if fields[i] == 'tries' then
    fields[i + 1] = ARGV[6]
    counted = true
  end
end
if not counted then
  fields[#fields + 1] = 'tries'
  fields[#fields + 1] = ARGV[6]
end
redis.call('HSET', ARGV[1] .. ':delayed:' .. id, unpack(fields))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), id)
redis.call('XACK', KEYS[1], ARGV[2], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[4])
return 1"
    ))
});

/// Moves a delivered entry this consumer owns to the failed tasks, with
/// its error, attempts and time. A task another server's worker submitted
/// also goes, with the error, to that server's results stream in the same
/// script, so its onTaskFailed runs exactly once whichever server gave it
/// up. KEYS stream, failed; ARGV prefix, group, consumer, entry id, error,
/// attempts. Returns the failure time, or 0 if the entry is no longer this
/// consumer's.
pub static FAIL: LazyLock<Script> = LazyLock::new(|| {
    with_clock(&format!(
        "{OWNED_ENTRY}local record = ARGV[1] .. ':failed:' .. id
redis.call('HSET', record, unpack(fields))
redis.call('HSET', record, 'error', ARGV[5], 'attempts', ARGV[6], 'failed_at', now)
redis.call('ZADD', KEYS[2], now, id)
local f = {{}}
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
local worker, ref, origin = string.match(f.meta, '^%d+ %-?%d+ (%-?%d+) (%-?%d+) %d+ %d+ (.+)$')
if origin ~= ARGV[3] and tonumber(worker) >= 0 then
  redis.call('XADD', ARGV[1] .. ':results:' .. origin, '*', 'id', id, 'worker', worker,
    'ref', ref, 'payload', f.payload, 'error', ARGV[5])
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[4])
return now"
    ))
});

/// Puts failed tasks back into their streams with no failed runs counted,
/// for no worker (worker -1: nobody's onFinish).
/// KEYS failed; ARGV prefix, task ids. Returns how many went back.
pub static RETRY_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local moved = 0
for i = 2, #ARGV do
  local key = ARGV[1] .. ':failed:' .. ARGV[i]
  local rec = redis.call('HGETALL', key)
  if #rec > 0 then
    local fields, prio = {}, '0'
    for j = 1, #rec, 2 do
      local f, v = rec[j], rec[j + 1]
      if f == 'meta' then
        local head, p, ref, rest = string.match(v, '^(%d+) (%-?%d+) %-?%d+ (%-?%d+) (.+)$')
        prio = p
        v = head .. ' ' .. p .. ' -1 ' .. ref .. ' ' .. rest
      end
      if f ~= 'error' and f ~= 'attempts' and f ~= 'failed_at' and f ~= 'tries' then
        fields[#fields + 1] = f
        fields[#fields + 1] = v
      end
    end
    redis.call('XADD', ARGV[1] .. ':stream:' .. prio, '*', unpack(fields))
    redis.call('DEL', key)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return moved",
    )
});

/// Forgets failed tasks. KEYS failed; ARGV prefix, task ids. Returns how
/// many were removed.
pub static PURGE_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local removed = 0
for i = 2, #ARGV do
  redis.call('DEL', ARGV[1] .. ':failed:' .. ARGV[i])
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
end
return removed",
    )
});

/// Takes up to `count` results out of a server's result stream (read and
/// deleted at once: the results are for this server's workers only).
/// KEYS results stream; ARGV count. Returns {id, fields} per result.
pub static TAKE_RESULTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local got = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
for _, e in ipairs(got) do redis.call('XDEL', KEYS[1], e[1]) end
return got",
    )
});

/// Counts in one consistent snapshot. KEYS priorities, delayed, failed;
/// ARGV prefix, group. Returns {queued, pending, delayed, failed}: queued
/// are entries not yet delivered, pending delivered and not acknowledged
/// (acknowledged entries are deleted, so XLEN = queued + pending).
pub static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local entries, pending = 0, 0
for _, prio in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local stream = ARGV[1] .. ':stream:' .. prio
  entries = entries + redis.call('XLEN', stream)
  local p = redis.pcall('XPENDING', stream, ARGV[2])
  if type(p) == 'table' and not p.err then pending = pending + p[1] end
end
return {entries - pending, pending, redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}",
    )
});

/// Holds a consumer name for a while: sets the lease when it is free, is
/// this holder's, or is the stale holder the caller names. KEYS lease;
/// ARGV holder, ttl_ms, stale holder (or ''). Returns '' when held, else
/// who holds it.
pub static HOLD_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] or (ARGV[3] ~= '' and v == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return v",
    )
});

/// Gives a consumer name up, if this holder still has it. KEYS lease;
/// ARGV holder. Returns 1 if it was released.
pub static RELEASE_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});
