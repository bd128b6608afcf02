"""
Helpers for test_guard.py (connection analysis, the protocol guard).

conftest.py (owned by the e2e helper) provides moatd, the protected
server and the basic clients; this file adds what only the guard tests
need:
  - guard_block(**kv): the `guard { ... }` config text;
  - Counters: refused/observed counters from `moatctl --json status`,
    compared as deltas (the fixture's readiness probe itself talks to
    moatd, e.g. it trips pregreet once per start when greet_pause is on);
  - the three well-behaved clients (smtplib, swaks, a pipelining raw
    client) that every test runs to show a check leaves them untouched;
  - closed(): a bounded wait for the server to close a raw connection;
  - rss_kb(pid): VmRSS from /proc.
Every wait is bounded; nothing is started that is not stopped here.
"""

import socket
import subprocess
import time

from conftest import (DOMAIN, SENDER, RawSMTP, make_message, send_ok, stuff)


def guard_block(**kv):
    body = " ".join(f"{k} = {v};" for k, v in kv.items())
    return f"guard {{ {body} }}\n"


def status(moat):
    return moat.ctl_ok("status")


class Counters:
    """Snapshot of refused/observed; delta() reads the change since."""

    def __init__(self, moat):
        self.moat = moat
        st = status(moat)
        self.refused = dict(st.get("refused") or {})
        self.observed = dict(st.get("observed") or {})

    def delta(self):
        st = status(self.moat)
        ref = {k: v - self.refused.get(k, 0)
               for k, v in (st.get("refused") or {}).items()}
        obs = {k: v - self.observed.get(k, 0)
               for k, v in (st.get("observed") or {}).items()}
        return ({k: v for k, v in ref.items() if v},
                {k: v for k, v in obs.items() if v})


def wait_refused(moat, before, reason, n=1, timeout=5):
    """Waits until reason was refused at least n more times; returns the
    (refused, observed) deltas."""
    deadline = time.monotonic() + timeout
    while True:
        ref, obs = before.delta()
        if ref.get(reason, 0) >= n:
            return ref, obs
        if time.monotonic() >= deadline:
            raise AssertionError(f"refused[{reason}] +{ref.get(reason, 0)}"
                                 f", wanted +{n}: refused={ref} "
                                 f"observed={obs}")
        time.sleep(0.05)


def banner(c):
    """Reads the complete banner (multi-line with the greet pause)."""
    code, lines = c.reply()
    assert code == 220, lines
    return lines


def closed(c, timeout=5):
    """True when the server closes the connection within timeout (data it
    still sends is returned in c.tail)."""
    c.tail = c.buf + c.read_eof(timeout)
    try:
        c.sock.settimeout(0.2)
        return c.sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def pipelining_client(port, rcpts=("user@" + DOMAIN, "other@" + DOMAIN),
                      helo="pipe.client.test"):
    """EHLO, then MAIL, RCPT.., DATA in one write, the body after 354.
    Returns the final (code, lines)."""
    with RawSMTP(port) as c:
        banner(c)
        code, lines = c.cmd(f"EHLO {helo}")
        assert code == 250 and "250-PIPELINING" in lines, lines
        group = f"MAIL FROM:<{SENDER}>\r\n"
        group += "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts)
        group += "DATA\r\n"
        c.send(group)
        for _ in range(1 + len(rcpts)):
            code, lines = c.reply()
            assert code == 250, (lines, c.transcript)
        code, lines = c.reply()
        assert code == 354, (lines, c.transcript)
        c.send(stuff(make_message(subject="pipelined")))
        code, lines = c.reply()
        assert code == 250, (lines, c.transcript)
        c.cmd("QUIT")
        return code, lines


def swaks(port, timeout=30):
    p = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--to",
         "user@" + DOMAIN, "--from", SENDER, "--helo", "swaks.client.test",
         "--header", "Subject: swaks", "--timeout", "10"],
        capture_output=True, timeout=timeout)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, f"swaks rc={p.returncode}: {out[-2000:]}"
    assert "<-  250 2.0.0 Ok: queued as" in out, out[-2000:]
    return out


def good_clients_pass(moat, server):
    """smtplib, swaks and a pipelining client each deliver a message,
    and none of them trips anything (no refusal, nothing observed)."""
    before = Counters(moat)
    n0 = len(server.snapshot())
    send_ok(moat.port)
    swaks(moat.port)
    pipelining_client(moat.port)
    server.wait_for(n0 + 3, timeout=20)
    ref, obs = before.delta()
    assert not ref and not obs, (f"well-behaved clients tripped: "
                                 f"refused={ref} observed={obs}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
