//! The client connections as the master keeps them: the session table,
//! which event worker each message goes to (`dispatch_mode`), backpressure
//! towards clients whose worker is backed up, the auth gate, replies in the
//! client's own framing, and what `getClientInfo()`, `getClientList()` and
//! the heartbeat read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::auth_gate::AuthGate;
use super::outbox::Outbox;
use super::parking::{Lot, Parked, Resumed};
use super::workers::Workers;
use crate::frame::FrameCodec;
use crate::log::Level;
use crate::protocol::{code, put_ack, put_error, put_reply, KIND_MESSAGE};
use crate::queue::now_ms;

/// How replies to a client are written.
enum ReplyFraming {
    /// The client has not shown its protocol yet. Replies (a greeting from
    /// onConnect) wait here, for at most `connection::GREETING_HOLD`: a
    /// TaskClient announces itself with its first request, and a greeting
    /// written unframed before that would be misread as a frame.
    Undecided(Vec<Bytes>),
    /// A foreign client, or one still silent after the hold: unframed.
    Raw,
    /// taskq's framed protocol.
    Taskq,
}

/// How the master holds a client's socket.
enum Link {
    /// A task serves it: replies go to the outbox, the closer ends it.
    Live {
        outbox: Rc<Outbox>,
        closer: Rc<Notify>,
    },
    /// Idle, without tasks (see `parking`).
    Parked(Parked),
}

/// One client connection.
struct Session {
    link: Link,
    framing: ReplyFraming,
    /// The event worker it was given at accept.
    worker: u32,
    peer: Option<SocketAddr>,
    /// Set by `bind()`; dispatch_mode 5 routes by it.
    uid: Option<u64>,
    connect_time: f64,
    last_recv: f64,
    last_send: f64,
    /// Has sent messages for event workers (not only tasks), so its reads
    /// pause while the worker its next message goes to is backed up.
    feeds_workers: bool,
    /// Has been parked: its close frees a resumed connection's tasks, which
    /// the lot has given back to the system (see `Lot::moved`).
    was_parked: bool,
    /// Presented the auth_token (always true on a server without one).
    authenticated: bool,
}

impl Session {
    /// Queues one reply in the client's protocol (a live session's).
    fn write(&self, data: &[u8]) {
        let Link::Live { outbox, .. } = &self.link else {
            return;
        };
        if matches!(self.framing, ReplyFraming::Taskq) {
            outbox.push_with(|b| FrameCodec::put(b, KIND_MESSAGE, data));
        } else {
            outbox.push_with(|b: &mut BytesMut| b.extend_from_slice(data));
        }
    }

    /// Queues bytes built by `fill` (a live session's).
    fn push_with(&self, fill: impl FnOnce(&mut BytesMut)) {
        if let Link::Live { outbox, .. } = &self.link {
            outbox.push_with(fill);
        }
    }

    /// Tells a live session's task to close the connection.
    fn close(&self) {
        if let Link::Live { closer, .. } = &self.link {
            closer.notify_one();
        }
    }
}

/// Unix time in seconds, as Swoole's `stats()` and `getClientInfo()` show it.
pub fn now() -> f64 {
    now_ms() as f64 / 1000.0
}

/// What the sessions count for `stats()` and the last log line.
#[derive(Debug, Default, Clone)]
pub struct SessionCounters {
    pub accept_count: u64,
    pub close_count: u64,
    pub abort_count: u64,
    pub request_count: u64,
    pub response_count: u64,
    pub total_recv_bytes: u64,
    pub total_send_bytes: u64,
    /// Client messages and tasks refused because the server was stopping.
    pub refused_stopping: u64,
}

/// The options sessions follow.
#[derive(Debug, Clone)]
pub struct SessionRules {
    pub dispatch_mode: u8,
    pub max_conn: usize,
    /// Shared secret taskq clients must present first.
    pub auth_token: Option<String>,
    pub auth_max_pending: usize,
    /// For `getClientInfo()`.
    pub server_port: u16,
    pub sock_type: i64,
}

/// The session table.
/// A session that ended.
pub struct Closed {
    /// The event worker it was given.
    pub worker: u32,
    /// Most of the connections once open are gone (the table shrank, or
    /// none is left): what they held is worth giving back to the system.
    pub many_gone: bool,
}

pub struct Sessions {
    rules: SessionRules,
    table: HashMap<u64, Session>,
    next_fd: u64,
    /// The worker the last message went to, in dispatch_mode 1 and 3.
    round_robin: usize,
    /// With an auth_token: pending and authenticated connections.
    gate: Option<AuthGate>,
    counters: SessionCounters,
    /// Where idle connections wait without tasks; `None` when the master
    /// could not make its epoll set (connections then stay live).
    lot: Option<Lot>,
}

impl Sessions {
    /// An empty table following `rules`.
    pub fn new(rules: SessionRules) -> Self {
        Sessions {
            gate: rules
                .auth_token
                .as_ref()
                .map(|_| AuthGate::new(rules.auth_max_pending, rules.max_conn)),
            rules,
            table: HashMap::new(),
            next_fd: 1,
            round_robin: 0,
            counters: SessionCounters::default(),
            lot: None,
        }
    }

    /// Lets idle connections be parked in `lot`.
    pub fn with_lot(mut self, lot: Lot) -> Self {
        self.lot = Some(lot);
        self
    }

    /// Whether idle connections can be parked.
    pub fn can_park(&self) -> bool {
        self.lot.is_some()
    }

    /// The lot's epoll descriptor and wake-up, for its task.
    pub fn lot_handles(&self) -> Option<std::io::Result<(std::os::fd::OwnedFd, Rc<Notify>)>> {
        self.lot.as_ref().map(Lot::handles)
    }

    /// Parks session `fd`'s connection. Refused (the connection handed
    /// back) when there is no lot, the session is gone or has replies
    /// waiting, or the socket cannot be watched.
    pub fn park(&mut self, fd: u64, parked: Parked) -> Result<(), Parked> {
        let (Some(lot), Some(s)) = (self.lot.as_mut(), self.table.get_mut(&fd)) else {
            return Err(parked);
        };
        match &s.link {
            Link::Live { outbox, .. } if outbox.pending() == 0 && !outbox.is_closed() => {}
            _ => return Err(parked),
        }
        if let Err(e) = lot.watch(fd, &parked.socket) {
            crate::log!(
                Level::Warning,
                "session #{fd}: cannot park the idle connection: {e}"
            );
            return Err(parked);
        }
        s.link = Link::Parked(parked);
        s.was_parked = true;
        Ok(())
    }

    /// Session `fd`, brought back first if it is parked (its new task is
    /// started by the lot's task, see `take_resumed`).
    fn live(&mut self, fd: u64) -> Option<&mut Session> {
        let s = self.table.get_mut(&fd)?;
        if let (Link::Parked(_), Some(lot)) = (&s.link, self.lot.as_mut()) {
            let (outbox, closer) = lot.fresh_link();
            let live = Link::Live {
                outbox: outbox.clone(),
                closer: closer.clone(),
            };
            if let Link::Parked(parked) = std::mem::replace(&mut s.link, live) {
                lot.resume(Resumed {
                    fd,
                    parked,
                    outbox,
                    closer,
                });
            }
        }
        Some(s)
    }

    /// A parked connection's socket became readable (input, end or error):
    /// brings it back.
    pub fn wake_parked(&mut self, fd: u64) {
        self.live(fd);
    }

    /// When the lot's memory is next to be given back (see `Lot::next_settle`).
    pub fn next_settle(&self) -> Option<std::time::Duration> {
        self.lot.as_ref().and_then(Lot::next_settle)
    }

    /// Gives back what the connections parked since the last trim held.
    pub fn settle_parking(&mut self) {
        if let Some(lot) = self.lot.as_mut() {
            lot.settle();
        }
    }

    /// The connections brought back since the last call, for their tasks.
    pub fn take_resumed(&mut self) -> Vec<Resumed> {
        self.lot.as_mut().map(Lot::take_resumed).unwrap_or_default()
    }

    /// Registers a new client and returns its session id and the event
    /// worker it is given; `None` when `max_conn` is reached. With an
    /// auth_token, only authenticated connections count towards `max_conn`
    /// (see `authenticated`), and a newcomer may close the oldest
    /// connection still to present it (`AuthGate`).
    pub fn open(
        &mut self,
        peer: Option<SocketAddr>,
        outbox: Rc<Outbox>,
        closer: Rc<Notify>,
        workers: &Workers,
    ) -> Option<(u64, u32)> {
        if self.gate.is_none() && self.table.len() >= self.rules.max_conn {
            self.counters.abort_count += 1;
            return None;
        }
        let fd = self.next_fd;
        self.next_fd += 1;
        if let Some(evicted) = self.gate.as_mut().and_then(|g| g.opened(fd)) {
            if let Some(s) = self.table.get(&evicted) {
                crate::log!(
                    Level::Notice,
                    "session #{evicted} had not presented the auth_token; closed to make room for a new connection (auth_max_pending {})",
                    self.rules.auth_max_pending
                );
                self.counters.abort_count += 1;
                s.close();
            }
        }
        self.counters.accept_count += 1;
        let worker = self.pick_worker(fd, peer.map(|p| p.ip()), workers.event_workers());
        let t = now();
        self.table.insert(
            fd,
            Session {
                link: Link::Live { outbox, closer },
                framing: ReplyFraming::Undecided(Vec::new()),
                worker,
                peer,
                uid: None,
                connect_time: t,
                last_recv: 0.0,
                last_send: 0.0,
                feeds_workers: false,
                was_parked: false,
                authenticated: self.gate.is_none(),
            },
        );
        Some((fd, worker))
    }

    /// The worker a new connection is bound to: by peer address in
    /// dispatch_mode 4, by session id otherwise.
    fn pick_worker(&self, fd: u64, peer: Option<IpAddr>, event_workers: u32) -> u32 {
        let n = u64::from(event_workers.max(1));
        let key = match (self.rules.dispatch_mode, peer) {
            (4, Some(IpAddr::V4(v4))) => u64::from(u32::from(v4)),
            (4, Some(IpAddr::V6(v6))) => (u128::from(v6) % u64::MAX as u128) as u64,
            _ => fd,
        };
        (key % n) as u32
    }

    /// The client proved it speaks taskq's framed protocol: replies held
    /// until now go out framed.
    pub fn speaks_taskq(&mut self, fd: u64) {
        self.decide(fd, ReplyFraming::Taskq);
    }

    /// The client speaks another protocol, or has said nothing for
    /// `GREETING_HOLD`: replies held until now go out unframed.
    pub fn speaks_raw(&mut self, fd: u64) {
        if let Some(Session {
            framing: ReplyFraming::Undecided(_),
            ..
        }) = self.table.get(&fd)
        {
            self.decide(fd, ReplyFraming::Raw);
        }
    }

    fn decide(&mut self, fd: u64, framing: ReplyFraming) {
        let Some(s) = self.live(fd) else {
            return;
        };
        if let ReplyFraming::Undecided(held) = std::mem::replace(&mut s.framing, framing) {
            for data in held {
                s.write(&data);
            }
        }
    }

    /// A message of `len` bytes from session `fd` for an event worker:
    /// counts it and returns the worker it goes to.
    pub fn message_from(&mut self, fd: u64, len: usize, workers: &Workers) -> Option<u32> {
        let s = self.table.get_mut(&fd)?;
        s.last_recv = now();
        s.feeds_workers = true;
        let (uid, bound) = (s.uid, s.worker);
        let (worker, _) = self.route(uid, bound, workers);
        if matches!(self.rules.dispatch_mode, 1 | 3) {
            self.round_robin = worker as usize;
        }
        self.counters.request_count += 1;
        self.counters.total_recv_bytes += len as u64;
        Some(worker)
    }

    /// The event worker a connection's next message goes to (`uid` from
    /// `bind()`, `bound` the worker it was given at accept), and whether
    /// that worker's outbox is over its high-water mark. A connection is
    /// bound to its worker in dispatch_mode 2 and 4 (and 5, by uid once
    /// bound); in 1 (in turn) and 3 (least busy) it is not, and those skip
    /// workers over the mark: a backed-up worker is not idle, and this way
    /// one blocked worker holds no client back while another has room.
    fn route(&self, uid: Option<u64>, bound: u32, workers: &Workers) -> (u32, bool) {
        let n = workers.event_workers().max(1) as usize;
        let over = |w: usize| workers.over_mark(w as u32);
        let start = (self.round_robin + 1) % n;
        let in_turn = (0..n).map(|k| (start + k) % n);
        let worker = match self.rules.dispatch_mode {
            5 => uid.map_or(bound as usize, |u| (u % n as u64) as usize),
            1 => in_turn.clone().find(|&w| !over(w)).unwrap_or(start),
            3 => {
                let outstanding = |&w: &usize| workers.outstanding(w as u32);
                in_turn
                    .clone()
                    .filter(|&w| !over(w))
                    .min_by_key(outstanding)
                    .or_else(|| in_turn.min_by_key(outstanding))
                    .unwrap_or(0)
            }
            _ => bound as usize,
        };
        (worker as u32, over(worker))
    }

    /// What session `fd`'s reader must wait for before reading more: the
    /// worker its next message goes to has more than its high-water mark
    /// waiting, so a client that sends faster than its worker handles is
    /// slowed down by TCP instead of filling the master's memory. Told
    /// whenever a worker outbox drains; the reader then asks again.
    /// Sessions that only submit tasks are never held back (their tasks do
    /// not go through an event worker).
    pub fn holding_back(&self, fd: u64, workers: &Workers) -> Option<Rc<Notify>> {
        let s = self.table.get(&fd).filter(|s| s.feeds_workers)?;
        self.route(s.uid, s.worker, workers)
            .1
            .then(|| workers.space())
    }

    /// Whether the configured auth_token equals `token` (constant time).
    pub fn token_ok(&self, token: &[u8]) -> bool {
        match &self.rules.auth_token {
            None => true,
            Some(expected) => {
                let e = expected.as_bytes();
                e.len() == token.len()
                    && e.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
        }
    }

    /// Session `fd` presented the right auth_token. False when `max_conn`
    /// authenticated connections are open already: the caller refuses it.
    pub fn authenticated(&mut self, fd: u64) -> bool {
        let Some(gate) = self.gate.as_mut() else {
            return true;
        };
        if !gate.authenticated(fd) {
            self.counters.abort_count += 1;
            return false;
        }
        if let Some(s) = self.table.get_mut(&fd) {
            s.authenticated = true;
        }
        true
    }

    /// `max_conn`, for the refusal message.
    pub fn max_conn(&self) -> usize {
        self.rules.max_conn
    }

    /// Tells a foreign client why it is refused, in plain text, before the
    /// connection is closed.
    pub fn refuse_foreign(&mut self, fd: u64, why: &str) {
        self.decide(fd, ReplyFraming::Raw);
        if let Some(s) = self.live(fd) {
            s.write(why.as_bytes());
        }
    }

    /// The connection ended, by either side; returns the worker it was
    /// bound to.
    pub fn closed(&mut self, fd: u64) -> Option<Closed> {
        let s = self.table.remove(&fd)?;
        if let Some(gate) = self.gate.as_mut() {
            gate.closed(fd, s.authenticated);
        }
        let shrunk = crate::memory::shrunk_capacity(self.table.len(), self.table.capacity());
        if let Some(room) = shrunk {
            self.table.shrink_to(room);
        }
        self.counters.close_count += 1;
        if let Link::Live { outbox, .. } = &s.link {
            outbox.close();
        }
        if let (true, Some(lot)) = (s.was_parked, self.lot.as_mut()) {
            lot.moved();
        }
        Some(Closed {
            worker: s.worker,
            many_gone: shrunk.is_some() || self.table.is_empty(),
        })
    }

    /// `$server->send()`: a worker's reply to session `fd`.
    pub fn send(&mut self, fd: u64, data: &[u8]) {
        let Some(s) = self.live(fd) else {
            crate::log!(Level::Notice, "send to session #{fd} failed: it is closed");
            return;
        };
        s.last_send = now();
        match &mut s.framing {
            ReplyFraming::Undecided(held) => held.push(Bytes::copy_from_slice(data)),
            _ => s.write(data),
        }
        self.counters.response_count += 1;
        self.counters.total_send_bytes += data.len() as u64;
    }

    /// A message or task that arrived after the stop began: counted, and
    /// answered with the "server stopping" error (a taskq client), or by
    /// closing the connection (a raw client has no error to read), so no
    /// producer takes it for accepted.
    pub fn refuse_stopping(&mut self, fd: u64) {
        let Some(s) = self.live(fd) else {
            return;
        };
        if matches!(s.framing, ReplyFraming::Taskq) {
            self.answer_error(fd, code::STOPPING, "the server is stopping");
        } else {
            s.close();
        }
        self.counters.refused_stopping += 1;
    }

    /// Sends an ERROR answer to a taskq client.
    pub fn answer_error(&mut self, fd: u64, code: u32, message: &str) {
        if let Some(s) = self.live(fd) {
            s.push_with(|b| put_error(b, code, message));
        }
    }

    /// Acknowledges a request to a taskq client (`id` 0, or the task id).
    pub fn answer_ack(&mut self, fd: u64, id: u64) {
        if let Some(s) = self.live(fd) {
            s.push_with(|b| put_ack(b, id));
        }
    }

    /// Answers a taskq client's question with a JSON document.
    pub fn answer_reply(&mut self, fd: u64, json: &serde_json::Value) {
        if let Some(s) = self.live(fd) {
            let body = json.to_string();
            s.push_with(|b| put_reply(b, body.as_bytes()));
        }
    }

    /// `$server->bind()`: true the first time only, as in Swoole.
    pub fn bind(&mut self, fd: u64, uid: u64) -> bool {
        match self.table.get_mut(&fd) {
            Some(s) if s.uid.is_none() => {
                s.uid = Some(uid);
                true
            }
            _ => false,
        }
    }

    /// `$server->exist()`.
    pub fn exists(&self, fd: u64) -> bool {
        self.table.contains_key(&fd)
    }

    /// `getClientList()`: up to `limit` session ids above `after`, ascending.
    pub fn list(&self, after: u64, limit: u64) -> Vec<u64> {
        let mut fds: Vec<u64> = self
            .table
            .keys()
            .copied()
            .filter(|&fd| fd > after)
            .collect();
        fds.sort_unstable();
        fds.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        fds
    }

    /// `getClientInfo()`, with Swoole's keys.
    pub fn client_info(&self, fd: u64) -> Value {
        let Some(s) = self.table.get(&fd) else {
            return Value::Null;
        };
        let (ip, port) = match s.peer {
            Some(p) => (p.ip().to_string(), p.port()),
            None => (String::new(), 0),
        };
        json!({
            "server_port": self.rules.server_port,
            "server_fd": 0,
            "socket_fd": fd,
            "socket_type": self.rules.sock_type,
            "remote_port": port,
            "remote_ip": ip,
            "reactor_id": 0,
            "connect_time": s.connect_time as u64,
            "last_time": s.last_recv.max(s.connect_time) as u64,
            "last_recv_time": s.last_recv,
            "last_send_time": s.last_send,
            "last_dispatch_time": s.last_recv,
            "close_errno": 0,
            "recv_queued_bytes": 0,
            "send_queued_bytes": 0,
            "worker_id": s.worker,
            "uid": s.uid,
            "taskq_protocol": matches!(s.framing, ReplyFraming::Taskq),
        })
    }

    /// Sessions idle (nothing received) for at least `idle` seconds, for
    /// the heartbeat check.
    pub fn idle(&self, idle: f64) -> Vec<u64> {
        let t = now();
        self.table
            .iter()
            .filter(|(_, s)| t - s.last_recv.max(s.connect_time) >= idle)
            .map(|(fd, _)| *fd)
            .collect()
    }

    /// Closes session `fd` (heartbeat, `close()`).
    pub fn close(&mut self, fd: u64) {
        if let Some(s) = self.live(fd) {
            s.close();
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Session ids handed out so far (`session_round`).
    pub fn opened(&self) -> u64 {
        self.next_fd - 1
    }

    /// What the sessions counted.
    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::outbox::take_frames;
    use crate::protocol::Answer;

    fn rules(dispatch_mode: u8, max_conn: usize, token: Option<&str>) -> SessionRules {
        SessionRules {
            dispatch_mode,
            max_conn,
            auth_token: token.map(str::to_owned),
            auth_max_pending: 2,
            server_port: 9501,
            sock_type: 1,
        }
    }

    fn workers(n: u32, high_water: usize) -> Workers {
        Workers::new(
            n,
            0,
            high_water,
            Rc::new(Notify::new()),
            Rc::new(Notify::new()),
        )
    }

    /// Puts more than its high-water mark of 1 byte in `worker`'s outbox.
    fn back_up(w: &mut Workers, worker: u32) {
        w.push_event(
            worker,
            &crate::ipc::ToWorker::Close {
                fd: 9,
                reactor_id: 0,
            },
        );
    }

    fn open(s: &mut Sessions, w: &Workers) -> (u64, Rc<Outbox>, Rc<Notify>) {
        let outbox = Rc::new(Outbox::for_client(Rc::new(Notify::new())));
        let closer = Rc::new(Notify::new());
        let (fd, _) = s.open(None, outbox.clone(), closer.clone(), w).unwrap();
        (fd, outbox, closer)
    }

    #[test]
    fn max_conn_refuses_the_next_connection_and_counts_it() {
        let w = workers(2, 1 << 20);
        let mut s = Sessions::new(rules(2, 1, None));
        let (fd, _, _) = open(&mut s, &w);
        assert!(s
            .open(
                None,
                Rc::new(Outbox::for_client(Rc::new(Notify::new()))),
                Rc::new(Notify::new()),
                &w
            )
            .is_none());
        assert_eq!(s.counters().abort_count, 1);
        let closed = s.closed(fd).unwrap();
        assert_eq!(closed.worker, fd as u32 % 2);
        assert!(closed.many_gone, "the last connection went");
        assert!(s.is_empty());
        assert_eq!(s.counters().close_count, 1);
    }

    #[test]
    fn closing_most_of_many_connections_says_so_and_a_few_do_not() {
        let w = workers(1, 1 << 20);
        let mut s = Sessions::new(rules(1, 10_000, None));
        let fds: Vec<u64> = (0..5000).map(|_| open(&mut s, &w).0).collect();
        let many = fds
            .iter()
            .map(|&fd| s.closed(fd).unwrap().many_gone)
            .collect::<Vec<_>>();
        assert!(!many[0], "one of 5,000 closing is not worth a trim");
        assert!(
            many[..4000].iter().any(|&m| m),
            "the table shrank on the way down"
        );
        assert!(many[4999], "none left");
    }

    #[test]
    fn fixed_mode_keeps_a_connection_on_its_worker_round_robin_skips_backed_up_ones() {
        let w = workers(3, 1 << 20);
        let mut fixed = Sessions::new(rules(2, 10, None));
        let (fd, _, _) = open(&mut fixed, &w);
        let first = fixed.message_from(fd, 1, &w).unwrap();
        assert_eq!(fixed.message_from(fd, 1, &w), Some(first));

        let mut w = workers(3, 1);
        let mut turn = Sessions::new(rules(1, 10, None));
        let (fd, _, _) = open(&mut turn, &w);
        let order: Vec<u32> = (0..3)
            .map(|_| turn.message_from(fd, 1, &w).unwrap())
            .collect();
        assert_eq!(order, [1, 2, 0]);
        back_up(&mut w, 1);
        assert_eq!(
            turn.message_from(fd, 1, &w),
            Some(2),
            "worker 1 is over its mark"
        );
        assert_eq!(turn.counters().request_count, 4);
    }

    #[test]
    fn a_session_feeding_a_backed_up_worker_is_held_back() {
        let mut w = workers(1, 1);
        let mut s = Sessions::new(rules(2, 10, None));
        let (fd, _, _) = open(&mut s, &w);
        assert!(s.holding_back(fd, &w).is_none(), "it sent no message yet");
        s.message_from(fd, 1, &w);
        assert!(s.holding_back(fd, &w).is_none());
        back_up(&mut w, 0);
        assert!(s.holding_back(fd, &w).is_some());
    }

    #[test]
    fn replies_wait_until_the_client_shows_its_protocol() {
        let w = workers(1, 1 << 20);
        let mut s = Sessions::new(rules(2, 10, None));
        let (fd, outbox, _) = open(&mut s, &w);
        s.send(fd, b"hello");
        assert_eq!(outbox.pending(), 0, "held while undecided");
        s.speaks_raw(fd);
        assert_eq!(&outbox.take()[..], b"hello");
        s.speaks_taskq(fd);
        s.send(fd, b"x");
        assert_eq!(
            take_frames(&outbox),
            vec![crate::frame::Frame {
                kind: KIND_MESSAGE,
                body: Bytes::from_static(b"x")
            }]
        );
        assert_eq!(s.counters().response_count, 2);
    }

    #[test]
    fn a_stopping_server_answers_taskq_clients_and_closes_raw_ones() {
        let w = workers(1, 1 << 20);
        let mut s = Sessions::new(rules(2, 10, None));
        let (taskq, outbox, _) = open(&mut s, &w);
        s.speaks_taskq(taskq);
        s.refuse_stopping(taskq);
        let frame = take_frames(&outbox).remove(0);
        assert_eq!(
            Answer::decode(frame.kind, frame.body).unwrap(),
            Answer::Error {
                code: code::STOPPING,
                message: "the server is stopping".into()
            }
        );
        let (raw, _, closer) = open(&mut s, &w);
        s.speaks_raw(raw);
        s.refuse_stopping(raw);
        assert!(futures_ready(&closer));
        assert_eq!(s.counters().refused_stopping, 2);
    }

    /// Whether a notification is stored (the session's closer was told).
    fn futures_ready(n: &Notify) -> bool {
        let waiter = n.notified();
        tokio::pin!(waiter);
        waiter.as_mut().enable()
    }

    #[test]
    fn the_token_is_compared_whole_and_the_gate_counts_only_authenticated_sessions() {
        let w = workers(1, 1 << 20);
        let mut s = Sessions::new(rules(2, 1, Some("secret")));
        assert!(s.token_ok(b"secret"));
        assert!(!s.token_ok(b"secre") && !s.token_ok(b"secrets"));
        let (a, _, _) = open(&mut s, &w);
        let (b, _, _) = open(&mut s, &w);
        assert!(s.authenticated(a));
        assert!(!s.authenticated(b), "max_conn 1 is taken");
        assert_eq!(s.counters().abort_count, 1);
    }

    #[test]
    fn bind_list_and_info_answer_as_swoole_does() {
        let w = workers(2, 1 << 20);
        let mut s = Sessions::new(rules(5, 10, None));
        let fds: Vec<u64> = (0..3).map(|_| open(&mut s, &w).0).collect();
        assert!(s.bind(fds[0], 7));
        assert!(!s.bind(fds[0], 8), "a session binds once");
        assert_eq!(s.message_from(fds[0], 1, &w), Some(1), "uid 7 % 2");
        assert_eq!(s.list(fds[0], 10), fds[1..].to_vec());
        assert_eq!(s.list(0, 1), vec![fds[0]]);
        let info = s.client_info(fds[0]);
        assert_eq!(info["uid"], 7);
        assert_eq!(info["server_port"], 9501);
        assert_eq!(s.client_info(999), Value::Null);
        assert_eq!(s.opened(), 3);
    }

    fn parked(socket: std::os::fd::OwnedFd) -> Parked {
        Parked {
            socket,
            unix: true,
            inbound: crate::master::parking::Inbound::Taskq,
            authenticated: true,
        }
    }

    #[test]
    fn a_reply_or_a_close_brings_a_parked_connection_back_with_it() {
        let w = workers(1, 1 << 20);
        let lot = Lot::new(Rc::new(Notify::new())).unwrap();
        let mut s = Sessions::new(rules(2, 10, None)).with_lot(lot);
        let (a, outbox, _) = open(&mut s, &w);
        let (b, _, _) = open(&mut s, &w);
        s.speaks_taskq(a);
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        outbox.push_with(|buf| buf.extend_from_slice(b"unwritten"));
        let refused = s.park(a, parked(ours.into())).unwrap_err();
        assert!(
            s.take_resumed().is_empty(),
            "replies still to write: not parked"
        );
        outbox.take();
        s.park(a, refused).unwrap();
        let (ours, _theirs2) = std::os::unix::net::UnixStream::pair().unwrap();
        s.park(b, parked(ours.into())).unwrap();
        assert!(s.exists(a) && s.exists(b));
        assert!(s.take_resumed().is_empty());

        s.answer_ack(a, 7);
        s.close(b);
        let resumed = s.take_resumed();
        assert_eq!(resumed.iter().map(|r| r.fd).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(
            resumed[0].parked.inbound,
            crate::master::parking::Inbound::Taskq
        );
        let frames = take_frames(&resumed[0].outbox);
        let f = frames[0].clone();
        assert_eq!(Answer::decode(f.kind, f.body).unwrap(), Answer::Ack(7));
        assert!(!futures_ready(&resumed[0].closer));
        assert!(
            futures_ready(&resumed[1].closer),
            "the close waits for the new task"
        );
        s.answer_ack(a, 8);
        assert!(
            s.take_resumed().is_empty(),
            "live again: written to, not resumed twice"
        );
    }
}
