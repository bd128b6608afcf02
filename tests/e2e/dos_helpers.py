"""
Helpers for the denial-of-service tests (test_dos.py).

What it does: opens many client connections from distinct loopback
source addresses (Linux routes all of 127/8 to lo, so binding a client
socket to 127.0.x.y makes moat see a different client IP), reads the
first reply of each with a bounded wait, and runs the "well-behaved
client" whose transaction must keep working while the flood is on.

Invariants: every socket opened here is registered in a Pool and closed
by Pool.close() (the tests use it as a context manager); every read has
a timeout; every loop is bounded by a count.
"""

import resource
import smtplib
import socket
import time

from conftest import DOMAIN, SENDER, make_message, new_msgid, wait_until

GOOD_IP = "127.0.9.9"       # the well-behaved client, in its own /24


def raise_nofile(want):
    """Lifts this process's descriptor limit towards want (soft up to the
    hard limit): a thousand held sockets need more than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_reply_line(sock, timeout):
    """The first CRLF-terminated line the server sends, or b"" on EOF,
    or None if nothing complete arrived within timeout."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n" not in buf and len(buf) < 4096:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return buf
        if not chunk:
            return buf
        buf += chunk
    return buf.split(b"\r\n", 1)[0]


class Pool:
    """A bounded set of open client sockets, closed together."""

    def __init__(self, port, limit=5000):
        self.port = port
        self.limit = limit
        self.socks = []

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def open(self, src, timeout=5):
        """Connects from source address src; returns the socket."""
        assert len(self.socks) < self.limit, "socket pool bound reached"
        s = socket.create_connection(("127.0.0.1", self.port),
                                     timeout=timeout,
                                     source_address=(src, 0))
        self.socks.append(s)
        return s

    def open_and_read(self, src, timeout=5):
        """Connects and returns (socket, first reply line)."""
        s = self.open(src, timeout)
        return s, read_reply_line(s, timeout)

    def close_some(self, n):
        for s in self.socks[:n]:
            s.close()
        del self.socks[:n]

    def close(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []


def good_transaction(port, src=GOOD_IP, bound=10.0):
    """One complete transaction from the well-behaved client: banner,
    EHLO, MAIL, RCPT, DATA, QUIT.  Returns (seconds, msgid).  Fails if any
    step is refused or the whole thing takes longer than bound."""
    msgid = new_msgid()
    body = make_message(msg_id=msgid, subject="good client")
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="good.test",
                      timeout=bound, source_address=(src, 0)) as s:
        code, msg = s.ehlo()
        assert code == 250, (code, msg)
        code, msg = s.mail(SENDER)
        assert code == 250, (code, msg)
        code, msg = s.rcpt("good@" + DOMAIN)
        assert code == 250, (code, msg)
        code, msg = s.data(body)
        assert code == 250, (code, msg)
    took = time.monotonic() - t0
    assert took < bound, f"good client took {took:.2f}s (bound {bound}s)"
    return took, msgid


def assert_received_exactly(server, msgids, timeout=15, settle=1.0):
    """The protected server got every msgid in msgids once and nothing
    else: waits (bounded) for them, then a moment more for extras."""
    want = set(msgids)
    wait_until(lambda: want <= set(server.by_msgid()), timeout,
               interval=0.1, what=f"{len(want)} messages at the server")
    time.sleep(settle)
    seen = server.by_msgid()
    extra = set(seen) - want
    assert not extra, f"server received {len(extra)} messages moat did " \
        f"not accept: {sorted(extra)[:5]}"
    dups = {k: len(v) for k, v in seen.items() if len(v) > 1}
    assert not dups, f"delivered more than once: {dups}"


def status(moat):
    return moat.ctl_ok("status")


def refused(moat, reason):
    return status(moat).get("refused", {}).get(reason, 0)
