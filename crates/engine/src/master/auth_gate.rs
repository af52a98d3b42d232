//! With an `auth_token`, connections that have not presented it yet are
//! kept apart from the ones that have: they count towards their own, smaller
//! limit (`auth_max_pending`), and when it is reached the oldest of them
//! makes room for the newcomer. Sockets that connect and say nothing can then
//! never lock producers out: only authenticated connections count towards
//! `max_conn`, and a producer authenticates within a round trip while idle
//! sockets wait to be evicted or to reach `auth_timeout`.

use std::collections::VecDeque;

/// The master's count of pending and authenticated connections.
#[derive(Debug)]
pub struct AuthGate {
    /// Connections still to present the token, oldest first.
    pending: VecDeque<u64>,
    max_pending: usize,
    authenticated: usize,
    max_conn: usize,
}

impl AuthGate {
    /// A gate for at most `max_pending` pending and `max_conn` authenticated
    /// connections.
    pub fn new(max_pending: usize, max_conn: usize) -> Self {
        AuthGate {
            pending: VecDeque::new(),
            max_pending: max_pending.max(1),
            authenticated: 0,
            max_conn,
        }
    }

    /// Connection `fd` was accepted. Returns the pending connection to close
    /// to make room for it, if the pending ones were at their limit.
    pub fn opened(&mut self, fd: u64) -> Option<u64> {
        let evicted = if self.pending.len() >= self.max_pending {
            self.pending.pop_front()
        } else {
            None
        };
        self.pending.push_back(fd);
        evicted
    }

    /// `fd` presented the token. False when `max_conn` connections are
    /// authenticated already: the caller refuses it.
    pub fn authenticated(&mut self, fd: u64) -> bool {
        if self.authenticated >= self.max_conn {
            return false;
        }
        self.forget_pending(fd);
        self.authenticated += 1;
        true
    }

    /// `fd` closed; `authenticated` says which count it was in.
    pub fn closed(&mut self, fd: u64, authenticated: bool) {
        if authenticated {
            self.authenticated = self.authenticated.saturating_sub(1);
        } else {
            self.forget_pending(fd);
        }
    }

    fn forget_pending(&mut self, fd: u64) {
        if let Some(i) = self.pending.iter().position(|p| *p == fd) {
            self.pending.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pending_pool_evicts_its_oldest() {
        let mut g = AuthGate::new(3, 10);
        assert_eq!(
            (1..=3).map(|fd| g.opened(fd)).collect::<Vec<_>>(),
            vec![None; 3]
        );
        assert_eq!(g.opened(4), Some(1));
        assert_eq!(g.opened(5), Some(2));
        // 3 closes by itself; the next newcomer fits without eviction
        g.closed(3, false);
        assert_eq!(g.opened(6), None);
        assert_eq!(g.opened(7), Some(4));
    }

    #[test]
    fn authenticated_connections_leave_the_pending_pool_and_count_towards_max_conn() {
        let mut g = AuthGate::new(2, 2);
        g.opened(1);
        g.opened(2);
        assert!(g.authenticated(1));
        assert_eq!(g.opened(3), None, "1 no longer holds a pending place");
        assert!(g.authenticated(2));
        g.opened(4);
        assert!(
            !g.authenticated(3),
            "max_conn authenticated connections at most"
        );
        g.closed(1, true);
        assert!(g.authenticated(3));
        assert_eq!(g.opened(5), None);
        assert_eq!(g.opened(6), Some(4));
    }

    #[test]
    fn six_hundred_idle_sockets_leave_room_for_a_producer() {
        let mut g = AuthGate::new(128, 500);
        let evicted = (1..=600).filter_map(|fd| g.opened(fd)).count();
        assert_eq!(evicted, 600 - 128);
        assert_eq!(g.opened(601), Some(473));
        assert!(g.authenticated(601));
    }
}
