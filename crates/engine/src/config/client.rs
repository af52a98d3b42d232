//! `$client->set()`: the client's options, their defaults and rules.

use super::apply::apply_atomically;
use super::coerce::{
    to_bool, to_non_empty_string, to_seconds, to_socket_buffer_size, DEFAULT_SOCKET_BUFFER_SIZE,
};
use super::error::{ConfigError, Warning};
use super::framing::Framing;
use super::schema::{names, store, Row, Schema};
use crate::packet::{PacketMode, PacketOptions};
use std::sync::OnceLock;
use taskq_value::Value;

/// Everything `$client->set()` accepts. The framing options are the
/// server's, but with Swoole's client default of body offset 0, so a client
/// configured like a Swoole client talks to a Swoole-configured server.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// The framing resolved from all framing options set so far. Rebuilt by
    /// every `apply`, so assigning it directly does not survive the next one.
    pub packet: PacketOptions,
    /// Disable Nagle, Swoole's default, for request/response latency.
    pub open_tcp_nodelay: bool,
    /// Socket buffer size; 8 MiB as on the server.
    pub socket_buffer_size: usize,
    /// Seconds allowed for `connect()`; `None` keeps the timeout passed to
    /// `connect()` itself, which is how Swoole treats an unset option.
    pub connect_timeout: Option<f64>,
    /// Seconds allowed for each read or write; `None` keeps the default.
    pub timeout: Option<f64>,
    /// Speak taskq's framed protocol (one send() = one onReceive) when no
    /// framing option is set. `false` makes the client a plain Swoole raw
    /// client for talking to servers that are not taskq.
    pub taskq_protocol: bool,
    /// `send()` waits until the server has taken the message.
    pub ack: bool,
    /// Shared secret presented at connect (server `auth_token`).
    pub auth_token: Option<String>,
    pub(super) framing: Framing,
}

impl ClientConfig {
    /// Swoole's client defaults (no framing, body offset 0), with taskq's
    /// larger `package_max_length` so big task results fit by default.
    pub fn new() -> Self {
        let framing = Framing::new(0);
        ClientConfig {
            packet: PacketOptions {
                mode: PacketMode::Raw,
                max_length: framing.max_length,
            },
            open_tcp_nodelay: true,
            socket_buffer_size: DEFAULT_SOCKET_BUFFER_SIZE,
            connect_timeout: None,
            timeout: None,
            taskq_protocol: true,
            ack: false,
            auth_token: None,
            framing,
        }
    }

    /// Applies one `set()` call atomically, with the same rules and
    /// warnings as `ServerConfig::apply`.
    pub fn apply(&mut self, entries: &[(String, Value)]) -> Result<Vec<Warning>, ConfigError> {
        apply_atomically(self, entries)
    }

    /// The keys `apply` understands, for suggestions and documentation.
    pub fn known_options() -> &'static [&'static str] {
        static NAMES: OnceLock<Vec<&str>> = OnceLock::new();
        NAMES.get_or_init(names::<Self>)
    }

    /// Whether `recv()` returns whole packets rather than whatever bytes
    /// arrived, which changes how the client must read.
    pub fn has_framing(&self) -> bool {
        self.packet.mode != PacketMode::Raw
    }
}

impl Schema for ClientConfig {
    /// Every option of `$client->set()`, each named once, in the order the
    /// "known options" warning lists them.
    const ROWS: &'static [Row<ClientConfig>] = &[
        Row::Framing,
        Row::Option(
            "open_tcp_nodelay",
            store!(open_tcp_nodelay, |k, v| to_bool(k, v)?),
        ),
        Row::Option(
            "socket_buffer_size",
            store!(socket_buffer_size, |k, v| to_socket_buffer_size(k, v)?),
        ),
        Row::Option(
            "connect_timeout",
            store!(connect_timeout, |k, v| Some(to_seconds(k, v)?)),
        ),
        Row::Option("timeout", store!(timeout, |k, v| Some(to_seconds(k, v)?))),
        Row::Option(
            "taskq_protocol",
            store!(taskq_protocol, |k, v| to_bool(k, v)?),
        ),
        Row::Option("ack", store!(ack, |k, v| to_bool(k, v)?)),
        Row::Option(
            "auth_token",
            store!(auth_token, |k, v| Some(to_non_empty_string(k, v)?)),
        ),
    ];

    fn framing_mut(&mut self) -> &mut Framing {
        &mut self.framing
    }
}

impl Default for ClientConfig {
    /// Same as `new`, so the client can be built with `..Default::default()`
    /// and by generic code.
    fn default() -> Self {
        Self::new()
    }
}
