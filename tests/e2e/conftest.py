"""
End-to-end fixtures for moat: a protected mail server (aiosmtpd) that
records every message byte for byte, the moatd daemon under test, and
small SMTP clients (smtplib, raw sockets, swaks).

Invariants the tests rely on:
  - every process started here is stopped at teardown by its PID
    (SIGTERM, then SIGKILL after 10 s); nothing is killed by name;
  - every wait is bounded: helpers take a timeout and raise on expiry;
  - ports come from the kernel (bind to port 0), so several runs can
    share the machine.

Run with Debian's python: /usr/bin/python3 -m pytest -q tests/e2e
The binaries come from $MOAT_BUILD (default: build/ at the repo root).
"""

import json as jsonlib
import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import uuid

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

DOMAIN = "example.test"
HOSTNAME = "mx.example.test"
SENDER = "sender@sender.test"

QID_RE = re.compile(r"^[0-9a-f]{18}$")
QUEUED_RE = re.compile(r"queued as ([0-9a-f]{18})\b")
# "250 2.1.0 ...", "250-2.0.0 ...": RFC 2034 enhanced status code.
ENHANCED_RE = re.compile(r"^(\d)\d\d[ -]([245])\.\d{1,3}\.\d{1,3}(?: |$)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "core: core relay (issue 1)")
    config.addinivalue_line(
        "markers", "disaster_recovery: outage handling, backups, pacing, "
        "limits, lifetime, integrity (issue 2; may land after the core)")


# ---------------------------------------------------------------------------
# Small utilities

def build_dir():
    b = os.environ.get("MOAT_BUILD", "build")
    return b if os.path.isabs(b) else os.path.join(REPO, b)


def moat_binary(name):
    path = os.path.join(build_dir(), name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found or not executable: build moat first "
                    f"(make) or set MOAT_BUILD", pytrace=False)
    return path


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value; raises after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what}")
        time.sleep(interval)


def make_message(msg_id=None, subject="test", body=b"hello\r\n",
                 headers=(), sender=SENDER, to="user@" + DOMAIN):
    """An RFC 5322 message as bytes with CRLF line ends.  body is bytes
    (already CRLF) and goes in verbatim."""
    if msg_id is None:
        msg_id = new_msgid()
    lines = [f"From: <{sender}>", f"To: <{to}>", f"Subject: {subject}",
             f"Message-ID: {msg_id}", "Date: Fri, 04 Dec 2026 12:00:00 +0000"]
    lines.extend(headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + body


def new_msgid():
    return f"<{uuid.uuid4().hex}@client.test>"


def msgid_of(content):
    """The Message-ID value of a raw message (bytes), or None."""
    m = re.search(rb"(?im)^Message-ID:\s*(<[^>\r\n]*>)", content)
    return m.group(1).decode() if m else None


def split_prepended(content, original):
    """moat prepends header lines (Received) to what the client sent.
    Returns the prepended prefix; fails the test unless content is that
    prefix followed by exactly the original bytes."""
    assert content.endswith(original), (
        f"delivered content does not end with the bytes sent: "
        f"{first_difference(content[-len(original):], original)}")
    return content[:len(content) - len(original)]


def first_difference(got, want):
    n = min(len(got), len(want))
    for i in range(n):
        if got[i] != want[i]:
            return (f"first difference at offset {i}: "
                    f"got={got[max(0, i-20):i+20]!r} "
                    f"want={want[max(0, i-20):i+20]!r}")
    return f"length got={len(got)} want={len(want)}"


def enhanced_ok(line):
    """True if a reply line carries an enhanced status code whose class
    matches the reply code's first digit."""
    m = ENHANCED_RE.match(line)
    return bool(m) and m.group(1) == m.group(2)


# ---------------------------------------------------------------------------
# The protected server

class Delivered:
    """One message as the protected server received it."""

    def __init__(self, mail_from, rcpts, content, mail_options, peer):
        self.mail_from = mail_from          # "" for the null sender
        self.rcpts = list(rcpts)
        self.content = content              # bytes, dots unstuffed, CRLF
        self.mail_options = list(mail_options)
        self.peer = peer
        self.time = time.monotonic()
        self.msgid = msgid_of(content)

    def __repr__(self):
        return (f"Delivered(from={self.mail_from!r} rcpts={self.rcpts} "
                f"size={len(self.content)} msgid={self.msgid})")


class _RecordingSMTP(AioSMTP):
    # aiosmtpd's default limit (1001) refuses lines longer than RFC 5321's
    # 1000; the protected server must not be the thing that limits a test.
    line_length_limit = 1 << 20


def _null(address):
    # aiosmtpd keeps the null reverse-path as "<>" (it needs a true value
    # in envelope.mail_from); the tests see it as "".
    return "" if address == "<>" else address


class _Handler:
    def __init__(self, srv):
        self.srv = srv

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        reply = self.srv._decide("MAIL", _null(address), None)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.srv._decide("RCPT", _null(envelope.mail_from), address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        # No await in here: the decision, the record and the write of the
        # reply happen in one step of the loop, so stop() (which closes
        # transports from a later loop step) can never lose a reply for a
        # message that was recorded.  That keeps "exactly once" checkable.
        return self.srv._data(envelope, session.peer)


class ProtectedServer:
    """aiosmtpd on 127.0.0.1:port that records every message.

    Policies (checked in order at MAIL, RCPT and end of DATA):
      .reject_rcpt(addr, reply)  answer reply to RCPT for that address
      .fail_next(n, reply)       answer reply at end of DATA for the next n
                                 transactions (e.g. 451 then 250)
      .set_policy(fn)            fn(stage, mail_from, rcpt) -> reply|None,
                                 stage in MAIL/RCPT/DATA (rcpt None except
                                 at RCPT)
    Control: start(), stop() (port closed: connection refused), start()
    again on the same port, running.
    Inspection: messages (list of Delivered), transactions (MAIL count),
    wait_for(n, timeout), by_msgid(), assert_exactly_once(msgids).
    """

    def __init__(self, port=None, name="server"):
        self.port = port or free_port()
        self.name = name
        self.addr = f"127.0.0.1:{self.port}"
        self.messages = []
        self.transactions = 0
        self.cond = threading.Condition()
        self.rcpt_replies = {}
        self.fail_queue = []
        self.policy = None
        self._controller = None
        self._protocols = set()
        self._stopping = False

    # policies
    def reject_rcpt(self, addr, reply="550 5.1.1 <%s>: no such user"):
        with self.cond:
            self.rcpt_replies[addr.lower()] = (reply % addr
                                               if "%s" in reply else reply)

    def fail_next(self, n, reply="451 4.3.0 try again later"):
        with self.cond:
            self.fail_queue.extend([reply] * n)

    def set_policy(self, fn):
        with self.cond:
            self.policy = fn

    def clear_policies(self):
        with self.cond:
            self.rcpt_replies.clear()
            self.fail_queue.clear()
            self.policy = None

    def _decide(self, stage, mail_from, rcpt):
        with self.cond:
            if self._stopping:
                return "421 4.3.2 shutting down"
            if stage == "MAIL":
                self.transactions += 1
            if self.policy:
                r = self.policy(stage, mail_from, rcpt)
                if r:
                    return r
            if stage == "RCPT" and rcpt.lower() in self.rcpt_replies:
                return self.rcpt_replies[rcpt.lower()]
        return None

    def _data(self, envelope, peer):
        with self.cond:
            if self._stopping:
                return "421 4.3.2 shutting down"
            if self.policy:
                r = self.policy("DATA", _null(envelope.mail_from), None)
                if r:
                    return r
            if self.fail_queue:
                return self.fail_queue.pop(0)
            self.messages.append(Delivered(
                _null(envelope.mail_from), envelope.rcpt_tos,
                bytes(envelope.original_content), envelope.mail_options,
                peer))
            self.cond.notify_all()
        return "250 2.0.0 Ok: stored"

    # lifecycle
    def start(self, timeout=10):
        assert self._controller is None, "already running"
        srv = self

        class _Ctl(Controller):
            def factory(self):
                p = _RecordingSMTP(self.handler, **self.SMTP_kwargs)
                srv._protocols.add(p)
                return p

        with self.cond:
            self._stopping = False
        ctl = _Ctl(_Handler(self), hostname="127.0.0.1", port=self.port,
                   decode_data=False, enable_SMTPUTF8=True,
                   data_size_limit=64 * 1024 * 1024,
                   server_hostname=f"{self.name}.{DOMAIN}",
                   ready_timeout=timeout)
        # The port was just released by stop(): retry a bounded while if
        # the kernel still has it.
        deadline = time.monotonic() + timeout
        while True:
            try:
                ctl.start()
                break
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        self._controller = ctl

    def stop(self):
        ctl = self._controller
        if ctl is None:
            return
        with self.cond:
            self._stopping = True

        def close_all():
            for p in list(srv_protocols):
                t = getattr(p, "transport", None)
                if t is not None:
                    t.close()
        srv_protocols = self._protocols
        try:
            ctl.loop.call_soon_threadsafe(close_all)
        except RuntimeError:
            pass
        ctl.stop(no_assert=True)
        self._protocols = set()
        self._controller = None

    @property
    def running(self):
        return self._controller is not None

    # inspection
    def wait_for(self, n, timeout=15):
        """Waits until at least n messages were recorded; returns a copy
        of the list.  Raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name}: {len(self.messages)} messages after "
                        f"{timeout}s, wanted {n}: {self.messages[-5:]}")
                self.cond.wait(min(left, 0.2))
            return list(self.messages)

    def wait_match(self, pred, timeout=15, what="a matching message"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [m for m in self.messages if pred(m)]
                if hits:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {what} after "
                                         f"{timeout}s: {self.messages[-5:]}")
                self.cond.wait(min(left, 0.2))

    def snapshot(self):
        with self.cond:
            return list(self.messages)

    def by_msgid(self):
        out = {}
        for m in self.snapshot():
            out.setdefault(m.msgid, []).append(m)
        return out

    def assert_exactly_once(self, msgids, allow_dups=False):
        """Every msgid was delivered (once, unless allow_dups); returns the
        number of duplicates seen."""
        seen = self.by_msgid()
        missing = [i for i in msgids if i not in seen]
        assert not missing, f"{len(missing)} never delivered: {missing[:5]}"
        dups = {i: len(seen[i]) for i in msgids if len(seen[i]) > 1}
        if not allow_dups:
            assert not dups, f"delivered more than once: {dups}"
        return sum(n - 1 for n in dups.values())


@pytest.fixture
def server_factory():
    made = []

    def make(port=None, name="server", start=True):
        s = ProtectedServer(port=port, name=name)
        made.append(s)
        if start:
            s.start()
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture
def server(server_factory):
    """The protected server, running."""
    return server_factory(name="primary")


# ---------------------------------------------------------------------------
# moatd

DEFAULT_SMTP = {"message_size_max": "1mb", "rcpt_max": "100"}
DEFAULT_DELIVERY = {"retry_min": "1s", "retry_max": "4s",
                    "circuit_failures": "3", "circuit_probe": "1s",
                    "delivery_concurrency": "4", "delivery_rate": "0",
                    "connect_timeout": "2s"}
DEFAULT_QUEUE = {"queue_lifetime": "5d", "delay_warning": "0",
                 "queue_max_messages": "0", "queue_max_bytes": "0",
                 "disk_min_free": "0"}


def render_config(d, listen, servers, smtp=None, delivery=None, queue=None,
                  extra="", hostname=HOSTNAME, log_level="debug"):
    def block(name, defaults, over):
        kv = dict(defaults)
        kv.update(over or {})
        body = " ".join(f"{k} = {v};" for k, v in kv.items())
        return f"{name} {{ {body} }}\n"
    listen_s = ", ".join(f'"{a}"' for a in listen)
    servers_s = ", ".join(f'"{s}"' for s in servers)
    return (f'listen = [{listen_s}];\n'
            f'hostname = "{hostname}";\n'
            f'queue_dir = "{d}/queue";\n'
            f'data_dir = "{d}/data";\n'
            f'control_socket = "{d}/moat.sock";\n'
            f'log_level = "{log_level}";\n'
            + block("smtp", DEFAULT_SMTP, smtp)
            + block("delivery", DEFAULT_DELIVERY, delivery)
            + block("queue", DEFAULT_QUEUE, queue)
            + f'domain "{DOMAIN}" {{ server = [{servers_s}]; }}\n'
            + extra
            # Site additions for every test, e.g. lifting per-IP limits if
            # their defaults would throttle 127.0.0.1.
            + os.environ.get("MOAT_E2E_EXTRA", ""))


class Moat:
    """moatd under test.

    Attributes: port, dir, conf (path), sock (control socket), queue_dir,
    pid, proc.  Methods: start(), stop(), sigkill(), restart(), signal(sig),
    moatctl(*args, json=True) -> (rc, parsed|text), log(), wait_log(re),
    send(...) (smtplib), alive.
    """

    def __init__(self, workdir, servers, port=None, **cfg):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.servers = [s.addr if isinstance(s, ProtectedServer) else s
                        for s in servers]
        self.conf = os.path.join(self.dir, "moat.conf")
        self.sock = os.path.join(self.dir, "moat.sock")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.logpath = os.path.join(self.dir, "moatd.log")
        self.cfg = cfg
        self.proc = None
        self.starts = 0
        self.write_config()

    def config_text(self, **over):
        cfg = dict(self.cfg)
        cfg.update(over)
        listen = cfg.pop("listen", [f"127.0.0.1:{self.port}"])
        return render_config(self.dir, listen, self.servers, **cfg)

    def write_config(self, text=None):
        with open(self.conf, "w") as f:
            f.write(text if text is not None else self.config_text())

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10):
        assert not self.alive, "moatd already running"
        moatd = moat_binary("moatd")
        self.starts += 1
        with open(self.logpath, "ab") as logf:
            logf.write(f"--- test: start #{self.starts} ---\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [moatd, "-c", self.conf], stdin=subprocess.DEVNULL,
                stdout=logf, stderr=logf, cwd=self.dir)
        self.wait_ready(timeout)

    def wait_ready(self, timeout=10):
        """Until the port answers with the 220 banner (bounded)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(
                    f"moatd exited with {self.proc.returncode} at start; "
                    f"log tail:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=1) as s:
                    s.settimeout(5)
                    banner = s.recv(512)
                    if banner.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return banner
                    last = banner
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"moatd not ready after {timeout}s ({last!r}); "
                             f"log tail:\n{self.log()[-3000:]}")

    def signal(self, sig):
        assert self.alive, "moatd is not running"
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after timeout; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def sigkill(self):
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, timeout=10):
        self.stop()
        self.start(timeout)

    def moatctl(self, *args, json=True, timeout=10, sock=None):
        """Runs moatctl; returns (rc, parsed JSON or None) with json=True,
        else (rc, stdout text).  stderr is kept in .last_stderr."""
        cmd = [moat_binary("moatctl"), "-s", sock or self.sock]
        if json:
            cmd.append("--json")
        cmd.extend(args)
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        self.last_stderr = p.stderr.decode(errors="replace")
        out = p.stdout.decode(errors="replace")
        if not json:
            return p.returncode, out
        try:
            return p.returncode, jsonlib.loads(out) if out.strip() else None
        except ValueError:
            raise AssertionError(f"moatctl {' '.join(args)}: not JSON "
                                 f"(rc={p.returncode}): {out[:500]!r}")

    def ctl_ok(self, *args):
        rc, j = self.moatctl(*args)
        assert rc == 0, (f"moatctl {' '.join(args)} rc={rc} "
                         f"stderr={self.last_stderr!r}")
        return j

    def queue_list(self):
        return self.ctl_ok("queue", "list")

    def queue_qids(self):
        return [m["qid"] for m in self.queue_list()["messages"]]

    def queue_count(self):
        """Messages in the queue (held included), from status: a small
        answer whatever the queue size."""
        return self.ctl_ok("status")["queue"]["messages"]

    def wait_queue_empty(self, timeout=20):
        return wait_until(lambda: self.queue_count() == 0, timeout,
                          interval=0.2, what="an empty queue")

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10):
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log()), timeout,
                          interval=0.1, what=f"log line /{pattern}/")

    def queue_files(self):
        """Paths of committed queue files (queue_dir/queue/<bucket>/<qid>)."""
        out = []
        base = os.path.join(self.queue_dir, "queue")
        if os.path.isdir(base):
            for b in sorted(os.listdir(base)):
                bd = os.path.join(base, b)
                if os.path.isdir(bd):
                    out.extend(os.path.join(bd, f) for f in os.listdir(bd))
        return out

    def send(self, body=None, rcpts=("user@" + DOMAIN,), sender=SENDER,
             **kw):
        return send_mail(self.port, body, rcpts, sender, **kw)


@pytest.fixture
def moat_factory(tmp_path):
    """moat_factory(servers, start=True, **cfg) -> Moat.  cfg: smtp={},
    delivery={}, queue={} (key -> config literal), extra="", listen=[]."""
    made = []

    def make(servers, start=True, name=None, **cfg):
        d = tmp_path / (name or f"moat{len(made)}")
        m = Moat(d, servers, **cfg)
        made.append(m)
        if start:
            m.start()
        return m
    yield make
    for m in made:
        m.stop()


@pytest.fixture
def moat(moat_factory, server):
    """moatd relaying example.test to the running `server`."""
    return moat_factory([server])


# ---------------------------------------------------------------------------
# SMTP clients

class SendResult:
    def __init__(self, code, text, refused):
        self.code = code
        self.text = text
        self.refused = refused      # {rcpt: (code, text)}
        m = QUEUED_RE.search(text)
        self.qid = m.group(1) if m else None

    def __repr__(self):
        return f"SendResult({self.code} {self.text!r} qid={self.qid})"


def send_mail(port, body=None, rcpts=("user@" + DOMAIN,), sender=SENDER,
              mail_options=(), helo="client.test", timeout=30):
    """One transaction over smtplib's low-level calls (so that no SIZE=
    is added behind our back).  body bytes must be CRLF; smtplib stuffs
    the dots.  Returns SendResult for the end of DATA (or for the failing
    MAIL / all-refused RCPT)."""
    if body is None:
        body = make_message()
    if isinstance(rcpts, str):
        rcpts = (rcpts,)
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo,
                      timeout=timeout) as s:
        s.ehlo()
        code, msg = s.mail(sender, list(mail_options))
        if code != 250:
            return SendResult(code, msg.decode(errors="replace"), {})
        refused = {}
        for r in rcpts:
            c, t = s.rcpt(r)
            if c not in (250, 251):
                refused[r] = (c, t.decode(errors="replace"))
        if len(refused) == len(rcpts):
            c, t = next(iter(refused.values()))
            s.rset()
            return SendResult(c, t, refused)
        code, msg = s.data(body)
        return SendResult(code, msg.decode(errors="replace"), refused)


def send_many(port, bodies, sender=SENDER, rcpts=("user@" + DOMAIN,),
              per_session=10, timeout=30):
    """Sends each body as its own transaction, per_session transactions
    per connection (fewer connections: per-IP connection limits stay out
    of the way).  Every one must get 250; returns the qids in order."""
    qids = []
    for i in range(0, len(bodies), per_session):
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                          timeout=timeout) as s:
            s.ehlo()
            for body in bodies[i:i + per_session]:
                code, msg = s.mail(sender)
                assert code == 250, (code, msg)
                for r in rcpts:
                    code, msg = s.rcpt(r)
                    assert code == 250, (code, msg)
                code, msg = s.data(body)
                r = SendResult(code, msg.decode(errors="replace"), {})
                assert code == 250 and r.qid, r
                qids.append(r.qid)
    return qids


def send_ok(port, body=None, **kw):
    r = send_mail(port, body, **kw)
    assert r.code == 250 and r.qid and QID_RE.match(r.qid), r
    return r


class RawSMTP:
    """A raw socket client for exact byte control.  reply() reads one
    complete (possibly multi-line) reply within the timeout."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.transcript = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise AssertionError("reply line too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; got {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def reply(self):
        """Returns (code:int, [lines]) for one reply."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            self.transcript.append(line)
            if len(lines) > 100:
                raise AssertionError("reply with more than 100 lines")
            if len(line) < 4 or line[3] != "-":
                break
        return int(lines[-1][:3]), lines

    def cmd(self, line):
        self.send(line.encode() + b"\r\n" if isinstance(line, str)
                  else line + b"\r\n")
        return self.reply()

    def read_eof(self, timeout=5):
        """Reads until EOF (bounded); returns the bytes."""
        self.sock.settimeout(timeout)
        out = b""
        while True:
            try:
                c = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return out
            if not c:
                return out
            out += c


def stuff(body):
    """SMTP dot-stuffing of a CRLF body, plus the terminating dot."""
    out = re.sub(rb"(?m)^\.", b"..", body)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"
