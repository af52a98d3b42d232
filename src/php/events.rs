//! Event names accepted by `on()`, matched case-insensitively as Swoole does
//! (with or without the `on` prefix), and the callbacks registered for them.

use std::collections::HashMap;

use ext_php_rs::types::Zval;

/// A server event with a PHP callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Start,
    Shutdown,
    WorkerStart,
    WorkerStop,
    Connect,
    Receive,
    Close,
    Task,
    Finish,
    WorkerExit,
    WorkerError,
    ManagerStart,
    ManagerStop,
    BeforeShutdown,
    PipeMessage,
    TaskFailed,
}

impl Event {
    /// Every event, in the order the warning lists them.
    pub const ALL: [Event; 16] = [
        Event::Start,
        Event::Shutdown,
        Event::WorkerStart,
        Event::WorkerStop,
        Event::Connect,
        Event::Receive,
        Event::Close,
        Event::Task,
        Event::Finish,
        Event::WorkerExit,
        Event::WorkerError,
        Event::ManagerStart,
        Event::ManagerStop,
        Event::BeforeShutdown,
        Event::PipeMessage,
        Event::TaskFailed,
    ];

    /// The name as Swoole's documentation writes it.
    pub fn name(self) -> &'static str {
        match self {
            Event::Start => "Start",
            Event::Shutdown => "Shutdown",
            Event::WorkerStart => "WorkerStart",
            Event::WorkerStop => "WorkerStop",
            Event::Connect => "Connect",
            Event::Receive => "Receive",
            Event::Close => "Close",
            Event::Task => "Task",
            Event::Finish => "Finish",
            Event::WorkerExit => "WorkerExit",
            Event::WorkerError => "WorkerError",
            Event::ManagerStart => "ManagerStart",
            Event::ManagerStop => "ManagerStop",
            Event::BeforeShutdown => "BeforeShutdown",
            Event::PipeMessage => "PipeMessage",
            Event::TaskFailed => "TaskFailed",
        }
    }

    /// Parses `on()`'s first argument.
    pub fn parse(name: &str) -> Option<Event> {
        let lower = name.to_ascii_lowercase();
        let find = |n: &str| {
            Event::ALL
                .into_iter()
                .find(|e| e.name().eq_ignore_ascii_case(n))
        };
        find(&lower).or_else(|| lower.strip_prefix("on").and_then(find))
    }

    /// "Start, Shutdown, ..." for error messages.
    pub fn known() -> String {
        Event::ALL.map(Event::name).join(", ")
    }
}

/// Registered callbacks. Zvals are kept with a reference, so closures stay
/// alive for the life of the server.
#[derive(Default)]
pub struct Callbacks {
    map: HashMap<Event, Zval>,
}

impl Callbacks {
    /// Registers (or replaces) the callback for `event`.
    pub fn set(&mut self, event: Event, callback: &Zval) {
        self.map.insert(event, callback.shallow_clone());
    }

    /// The callback for `event`, if any.
    pub fn get(&self, event: Event) -> Option<&Zval> {
        self.map.get(&event)
    }

    /// Whether `event` has a callback.
    pub fn has(&self, event: Event) -> bool {
        self.map.contains_key(&event)
    }

    /// A second table sharing the same callables, for the process that runs them.
    pub fn share(&self) -> Callbacks {
        Callbacks {
            map: self
                .map
                .iter()
                .map(|(k, v)| (*k, v.shallow_clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_with_optional_prefix() {
        assert_eq!(Event::parse("Receive"), Some(Event::Receive));
        assert_eq!(Event::parse("receive"), Some(Event::Receive));
        assert_eq!(Event::parse("onReceive"), Some(Event::Receive));
        assert_eq!(Event::parse("WORKERSTART"), Some(Event::WorkerStart));
        assert_eq!(Event::parse("pipeMessage"), Some(Event::PipeMessage));
        assert_eq!(Event::parse("onWorkerError"), Some(Event::WorkerError));
        assert_eq!(Event::parse("Recieve"), None);
        assert_eq!(Event::parse("on"), None);
        assert!(Event::known().starts_with("Start, Shutdown, WorkerStart"));
    }
}
