#!/usr/bin/python3
"""A real SMTP server (Debian's python3-aiosmtpd) for the mailer tests.

Listens on 127.0.0.1 on a port the kernel picks and writes that port to
--port-file once it accepts connections. Every accepted message is stored as
one JSON file in --dir (written to a temp name, then renamed, so a reader
never sees half a file); every new connection adds a line to
connections.log.

Recipients steer it, by the start of their local part:
  reject...@   550 at RCPT TO
  busy...@     451 at RCPT TO
  nodata...@   accepted at RCPT TO, then 554 at DATA
  close...@    the message is accepted, then the server closes the connection
  dropnext...@ the message is accepted; the next MAIL FROM on that connection
               is answered with 421 and the connection closed
and a sender whose local part starts with "refused" gets 550 at MAIL FROM.

Options: --tls-cert/--tls-key offer STARTTLS (or, with --implicit-tls, TLS
from the first byte), --auth USER:PASS enables AUTH (also without TLS),
--auth-mechanism restricts it to one mechanism, --idle-timeout closes idle
connections, --no-smtputf8 stops offering SMTPUTF8, --pipelining offers
PIPELINING (RFC 2920). aiosmtpd reads commands one by one from its stream, so
it serves a pipelining client as a real server does. Each stored message
records under "batched" the commands that were already buffered behind its
MAIL FROM, i.e. what the client sent in the same write.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

MECHANISMS = ("LOGIN", "PLAIN")


class Sink:
    """aiosmtpd handler: applies the recipient rules and stores messages."""

    def __init__(self, directory, pipelining):
        self.directory = directory
        self.pipelining = pipelining
        self.numbers = itertools.count(1)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if getattr(session, "drop_next", False):
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.4.2 closing connection"
        # asyncio.StreamReader keeps what it read but not yet returned here.
        envelope.batched = bytes(server._reader._buffer).decode(errors="replace")
        if address.split("@", 1)[0].startswith("refused"):
            return f"550 5.7.1 <{address}>: sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: recipient rejected"
        if local.startswith("busy"):
            return f"451 4.3.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        number = next(self.numbers)
        record = {
            "number": number,
            "connection": server.connection_number,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "batched": envelope.batched,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "auth": session.auth_data.decode() if session.authenticated else None,
            "data": base64.b64encode(envelope.original_content).decode(),
        }
        path = os.path.join(self.directory, f"msg-{number:06d}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        locals_ = [r.split("@", 1)[0] for r in envelope.rcpt_tos]
        if any(l.startswith("close") for l in locals_):
            # Runs after the reply below has been written.
            asyncio.get_running_loop().call_soon(server.transport.close)
        session.drop_next = any(l.startswith("dropnext") for l in locals_)
        return f"250 OK queued as {number}"


class CountingSMTP(SMTP):
    """Numbers connections (not the second connection_made of STARTTLS) and
    refuses DATA for nodata recipients (aiosmtpd has no hook before its 354)."""

    numbers = itertools.count(1)
    log = None

    def connection_made(self, transport):
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self.connection_number = next(self.numbers)
            with open(self.log, "a") as f:
                f.write(f"{self.connection_number}\n")

    async def smtp_DATA(self, arg):
        if any(r.split("@", 1)[0].startswith("nodata") for r in self.envelope.rcpt_tos):
            await self.push("554 5.7.1 message refused")
            return
        await super().smtp_DATA(arg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--auth-mechanism", choices=MECHANISMS)
    p.add_argument("--idle-timeout", type=float, default=300)
    p.add_argument("--no-smtputf8", action="store_true")
    p.add_argument("--pipelining", action="store_true")
    a = p.parse_args()

    context = None
    if a.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.tls_cert, a.tls_key)

    kwargs = {}
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, data):
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

        kwargs.update(authenticator=authenticator, auth_require_tls=False)
        if a.auth_mechanism:
            kwargs["auth_exclude_mechanism"] = [m for m in MECHANISMS if m != a.auth_mechanism]

    CountingSMTP.log = os.path.join(a.dir, "connections.log")
    sink = Sink(a.dir, a.pipelining)

    def factory():
        return CountingSMTP(
            sink,
            hostname="sink.test",
            ident="taskq test sink",
            enable_SMTPUTF8=not a.no_smtputf8,
            tls_context=None if a.implicit_tls else context,
            timeout=a.idle_timeout,
            **kwargs,
        )

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(factory, "127.0.0.1", 0, ssl=context if a.implicit_tls else None)
    )
    port = server.sockets[0].getsockname()[1]
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(a.port_file + ".tmp", a.port_file)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    loop.run_forever()


if __name__ == "__main__":
    main()
