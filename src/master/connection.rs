//! Client connections. The first bytes decide the protocol: taskq clients
//! announce themselves with `protocol::MAGIC` and then send frames, so every
//! `send()` is exactly one onReceive; anyone else gets Swoole's semantics for
//! the configured framing (raw reads by default).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;

use super::hub::Hub;
use super::outbox::{write_loop, Outbox};
use super::MasterConfig;
use crate::frame::FrameCodec;
use crate::listener::Listener;
use crate::log::Level;
use crate::packet::PacketDecoder;
use crate::protocol::{
    code, detect, Detected, TaskRequest, KIND_AUTH, KIND_MESSAGE, KIND_MESSAGE_ACK, KIND_TASK,
    MAGIC,
};

/// Starts accepting clients; abort the handle to stop listening.
pub fn spawn_acceptor(
    listener: &Listener,
    hub: Rc<RefCell<Hub>>,
    cfg: Rc<MasterConfig>,
) -> std::io::Result<JoinHandle<()>> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let l = TcpListener::from_std(l.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })?)?;
            tokio::task::spawn_local(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, peer)) => {
                            if cfg.open_tcp_nodelay {
                                let _ = stream.set_nodelay(true);
                            }
                            open(stream, Some(peer), &hub, &cfg);
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            })
        }
        Listener::Unix(l, _) => {
            let l = UnixListener::from_std(l.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })?)?;
            tokio::task::spawn_local(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, _)) => open(stream, None, &hub, &cfg),
                        Err(e) => accept_failed(e).await,
                    }
                }
            })
        }
    })
}

/// Out of file descriptors and similar: log, pause briefly, keep serving.
async fn accept_failed(e: std::io::Error) {
    crate::log!(Level::Warning, "accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

fn open<S>(stream: S, peer: Option<SocketAddr>, hub: &Rc<RefCell<Hub>>, cfg: &Rc<MasterConfig>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let outbox = Rc::new(Outbox::default());
    let closer = Rc::new(Notify::new());
    let Some(fd) = hub
        .borrow_mut()
        .client_opened(peer, outbox.clone(), closer.clone())
    else {
        crate::log!(
            Level::Warning,
            "max_conn {} reached; refused a connection from {}",
            cfg.max_conn,
            peer.map(|p| p.to_string())
                .unwrap_or_else(|| "a unix socket".into())
        );
        return;
    };
    let (rd, wr) = tokio::io::split(stream);
    tokio::task::spawn_local(write_loop(outbox, wr));
    tokio::task::spawn_local(read_loop(rd, fd, hub.clone(), cfg.clone(), closer));
}

enum Framing {
    Taskq(FrameCodec),
    Foreign(Box<PacketDecoder>),
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    fd: u64,
    hub: Rc<RefCell<Hub>>,
    cfg: Rc<MasterConfig>,
    closer: Rc<Notify>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut framing: Option<Framing> = None;
    let mut authenticated = cfg.auth_token.is_none();
    let mut partial_since: Option<Instant> = None;
    let result: Result<(), String> = loop {
        if framing.is_none() {
            match detect(&buf) {
                Detected::NeedMore => {}
                Detected::Taskq => {
                    let _ = buf.split_to(MAGIC.len());
                    hub.borrow_mut().client_is_taskq(fd);
                    framing = Some(Framing::Taskq(FrameCodec::new(cfg.package_max_length + 1)));
                }
                Detected::Foreign if !authenticated => {
                    break Err(
                        "a client without taskq's protocol cannot present the auth_token; refused"
                            .into(),
                    );
                }
                Detected::Foreign => {
                    framing = Some(Framing::Foreign(Box::new(PacketDecoder::new(
                        cfg.packet.clone(),
                    ))))
                }
            }
        }
        if let Err(e) = drain(&mut framing, &mut buf, fd, &hub, &mut authenticated) {
            break Err(e);
        }
        partial_since = match (buf.is_empty(), partial_since) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, since) => since,
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let deadline = partial_since.map(|t| t + cfg.package_timeout);
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break finish_eof(&mut framing, &mut buf, fd, &hub, &mut authenticated),
                Ok(_) => {}
                Err(e) => break Err(e.to_string()),
            },
            _ = closer.notified() => break Ok(()),
            _ = sleep_until(deadline) => {
                break Err(format!(
                    "an incomplete message ({} bytes) was not completed within package_timeout ({:?})",
                    buf.len(),
                    cfg.package_timeout
                ));
            }
        }
    };
    if let Err(e) = result {
        crate::log!(Level::Warning, "session #{fd}: {e}; connection closed");
    }
    hub.borrow_mut().client_closed(fd);
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn drain(
    framing: &mut Option<Framing>,
    buf: &mut BytesMut,
    fd: u64,
    hub: &Rc<RefCell<Hub>>,
    authenticated: &mut bool,
) -> Result<(), String> {
    match framing {
        None => Ok(()),
        Some(Framing::Taskq(codec)) => loop {
            let frame = match codec.decode(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("{e} (package_max_length)")),
            };
            if frame.kind == KIND_AUTH {
                let hub = hub.borrow();
                if hub.token_ok(&frame.body) {
                    *authenticated = true;
                    hub.answer_ack(fd);
                    continue;
                }
                hub.answer_error(fd, code::AUTH, "wrong auth_token");
                break Err("wrong auth_token".into());
            }
            if !*authenticated {
                hub.borrow()
                    .answer_error(fd, code::AUTH, "this server requires an auth_token");
                break Err("sent a request before presenting the auth_token".into());
            }
            match frame.kind {
                KIND_MESSAGE => hub.borrow_mut().client_message(fd, frame.body),
                KIND_MESSAGE_ACK => hub.borrow_mut().client_message_acked(fd, frame.body),
                KIND_TASK => match TaskRequest::decode(frame.body) {
                    Ok(req) => hub.borrow_mut().client_task(fd, req),
                    Err(e) => {
                        hub.borrow().answer_error(
                            fd,
                            code::BAD_REQUEST,
                            &format!("malformed task: {e}"),
                        );
                        break Err(format!("malformed task: {e}"));
                    }
                },
                other => {
                    hub.borrow().answer_error(
                        fd,
                        code::BAD_REQUEST,
                        &format!("unknown message kind {other}"),
                    );
                    break Err(format!("unknown message kind {other}"));
                }
            }
        },
        Some(Framing::Foreign(decoder)) => loop {
            match decoder.decode(buf) {
                Ok(Some(packet)) => hub.borrow_mut().client_message(fd, packet.freeze()),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        },
    }
}

fn finish_eof(
    framing: &mut Option<Framing>,
    buf: &mut BytesMut,
    fd: u64,
    hub: &Rc<RefCell<Hub>>,
    authenticated: &mut bool,
) -> Result<(), String> {
    if framing.is_none() && !buf.is_empty() {
        *framing = Some(Framing::Foreign(Box::new(PacketDecoder::new(
            crate::packet::PacketOptions {
                mode: crate::packet::PacketMode::Raw,
                max_length: usize::MAX,
            },
        ))));
    }
    drain(framing, buf, fd, hub, authenticated)?;
    match framing {
        Some(Framing::Foreign(decoder)) => match decoder.decode_eof(buf) {
            Ok(Some(packet)) => {
                hub.borrow_mut().client_message(fd, packet.freeze());
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Some(Framing::Taskq(codec)) => codec.decode_eof(buf).map(drop).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
