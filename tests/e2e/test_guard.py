"""
End-to-end tests of connection analysis (the protocol guard): moat refuses
what is not honest SMTP and leaves honest clients alone.

Each check gets a client that trips it (the reply, the close, the reason
counted in `moatctl --json status`) and the well-behaved clients
(smtplib, swaks, a pipelining client) that must pass untouched.

Not covered here: smtp.data_min_rate tripping.  The session applies the
rate only after SESSION_RATE_GRACE (30 s, smtp_session.c) of DATA, which
is too slow for this file; test_data_min_rate_good_client only shows that
the limit leaves a normal client alone.

Run: MOAT_BUILD=build /usr/bin/python3 -m pytest -q tests/e2e/test_guard.py
"""

import os
import re
import socket
import threading
import time

import pytest

from conftest import (DOMAIN, SENDER, RawSMTP, make_message, new_msgid,
                      send_ok, stuff)
from guard_helpers import (Counters, banner, closed, good_clients_pass,
                           guard_block, pipelining_client, rss_kb, status,
                           wait_refused)

RCPT = "user@" + DOMAIN


def settle(m, timeout=5):
    """Waits until moatd has no session open (the readiness probe of the
    fixture included), so that counter snapshots are stable."""
    deadline = time.monotonic() + timeout
    while status(m)["sessions"]["active"] != 0:
        assert time.monotonic() < deadline, "sessions still active"
        time.sleep(0.05)
    return Counters(m)


def ehlo(c, name="client.test"):
    code, lines = c.cmd(f"EHLO {name}")
    assert code == 250, lines
    return lines


def start_txn(c, rcpt=RCPT):
    assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250


# ---------------------------------------------------------------------------
# greet pause, pregreet, pass cache

def test_greet_pause_pregreet_and_pass(moat_factory, server):
    m = moat_factory([server], extra=guard_block(greet_pause="1s"))
    before = settle(m)

    # A client that waits gets the complete banner after the pause.  It
    # leaves without QUIT: a clean QUIT would already count as a pass.
    with RawSMTP(m.port) as c:
        t0 = time.monotonic()
        first = c._line()
        assert first.startswith("220-"), first
        code, lines = c.reply()
        dt = time.monotonic() - t0
        assert code == 220 and lines[-1].startswith("220 "), lines
        assert 0.8 <= dt < 3, f"banner completed after {dt:.2f}s"

    # A client that talks before the banner is complete: 554, closed.
    with RawSMTP(m.port) as c:
        assert c._line().startswith("220-")
        c.send(b"EHLO early.test\r\n")
        code, lines = c.reply()
        assert code == 554 and lines[-1].startswith("554 5.7.1"), lines
        assert closed(c)
    ref, obs = wait_refused(m, before, "proto.pregreet")
    assert ref == {"proto.pregreet": 1} and not obs, (ref, obs)
    assert server.snapshot() == []

    # A client that passed (a completed transaction) is remembered: the
    # banner comes at once, in one line.
    send_ok(m.port)
    with RawSMTP(m.port) as c:
        t0 = time.monotonic()
        code, lines = c.reply()
        dt = time.monotonic() - t0
        assert lines == [f"220 mx.example.test ESMTP moat"], lines
        assert dt < 0.5, f"remembered client waited {dt:.2f}s"
    good_clients_pass(m, server)


def test_pregreet_observe(moat_factory, server):
    m = moat_factory([server], extra=guard_block(greet_pause="1s",
                                                 pregreet="log"))
    before = settle(m)
    with RawSMTP(m.port) as c:
        assert c._line().startswith("220-")
        c.send(b"EHLO early.test\r\n")
        code, lines = c.reply()          # the rest of the banner
        assert code == 220, lines
        ehlo_lines = c.reply()           # then the early EHLO's answer
        assert ehlo_lines[0] == 250, ehlo_lines
        start_txn(c)
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(make_message()))
        assert c.reply()[0] == 250
        assert c.cmd("QUIT")[0] == 221
    ref, obs = before.delta()
    assert not ref and obs == {"proto.pregreet": 1}, (ref, obs)
    server.wait_for(1)


def test_tarpitted_pregreet_not_remembered(moat_factory, server):
    """pregreet = tarpit lets an early talker go on, delayed; its
    transaction is not clean, so it must not earn the pass that skips
    the greet pause next time (a clean transaction does)."""
    m = moat_factory([server], extra=guard_block(
        greet_pause="1s", pregreet="tarpit", error_delay="200ms"))
    before = settle(m)
    with RawSMTP(m.port) as c:
        assert c._line().startswith("220-")
        c.send(b"EHLO early.test\r\n")
        assert c.reply()[0] == 220
        assert c.reply()[0] == 250
        start_txn(c)
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(make_message()))
        assert c.reply()[0] == 250
        assert c.cmd("QUIT")[0] == 221
    ref, _ = wait_refused(m, before, "proto.pregreet")
    server.wait_for(1)
    with RawSMTP(m.port) as c:
        first = c._line()
        assert first.startswith("220-"), (
            f"tarpitted client skipped the greet pause: {first!r}")


# ---------------------------------------------------------------------------
# overlong command lines

LONG = b"NOOP " + b"x" * 595 + b"\r\n"          # 600 bytes + CRLF


def test_line_too_long_drop(moat_factory, server):
    m = moat_factory([server])
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        c.send(LONG)
        assert closed(c), "still open after an overlong line"
        assert c.tail == b"", f"drop sent a reply: {c.tail!r}"
    ref, _ = wait_refused(m, before, "proto.line_too_long")
    assert ref == {"proto.line_too_long": 1}, ref
    good_clients_pass(m, server)


def test_line_too_long_reject_and_log(moat_factory, server):
    # reject: like every check, 554 and close.
    m = moat_factory([server], extra=guard_block(line_too_long="reject"))
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        c.send(LONG)
        code, lines = c.reply()
        assert code == 554 and lines[0].startswith("554 5.7.1"), lines
        assert closed(c)
    ref, _ = wait_refused(m, before, "proto.line_too_long")
    assert ref == {"proto.line_too_long": 1}, ref

    # log: the line is answered 500 5.5.2 and the session goes on.
    m2 = moat_factory([server], extra=guard_block(line_too_long="log"))
    before = settle(m2)
    with RawSMTP(m2.port) as c:
        banner(c)
        ehlo(c)
        c.send(LONG)
        code, lines = c.reply()
        assert code == 500 and lines[0].startswith("500 5.5.2"), lines
        assert c.cmd("NOOP")[0] == 250
        start_txn(c)
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(make_message()))
        assert c.reply()[0] == 250
    ref, obs = before.delta()
    assert obs == {"proto.line_too_long": 1}, obs
    assert "proto.line_too_long" not in ref, ref
    server.wait_for(1)


def small_asan_quarantine(monkeypatch):
    """Under ASan, freed memory sits in a 256 MB quarantine and counts in
    RSS; a small one keeps the RSS checks about moat, not the sanitizer
    (no effect on a normal build)."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS",
                       (opts + ":" if opts else "") + "quarantine_size_mb=8")


def _stream_endless_line(port, total, result):
    """Sends `total` bytes without a LF after EHLO; records how many went
    out before the server closed, and how long it took."""
    chunk = b"A" * 65536
    sent = 0
    t0 = time.monotonic()
    try:
        with RawSMTP(port, timeout=10) as c:
            banner(c)
            ehlo(c)
            c.sock.settimeout(10)
            while sent < total and time.monotonic() - t0 < 20:
                c.sock.sendall(chunk)
                sent += len(chunk)
            result["closed"] = closed(c, timeout=10)
    except (BrokenPipeError, ConnectionResetError):
        result["closed"] = True
    result["sent"] = sent
    result["time"] = time.monotonic() - t0


@pytest.mark.parametrize("action", ["drop", "log"])
def test_endless_line_bounded(moat_factory, server, action,
                              monkeypatch):
    small_asan_quarantine(monkeypatch)
    m = moat_factory([server], extra=guard_block(line_too_long=action))
    settle(m)
    rss0 = rss_kb(m.pid)
    peak = [rss0]
    res = {}
    t = threading.Thread(target=_stream_endless_line,
                         args=(m.port, 100 * 1024 * 1024, res))
    t.start()
    # Meanwhile an honest client completes a transaction.
    send_ok(m.port)
    while t.is_alive():
        peak.append(rss_kb(m.pid))
        t.join(0.1)
    peak.append(rss_kb(m.pid))
    assert res.get("closed"), f"not disconnected: {res}"
    assert res["time"] < 15, res
    assert max(peak) - rss0 < 100 * 1024, (
        f"RSS grew {(max(peak) - rss0) // 1024} MB")
    st = status(m)
    assert st["refused"].get("proto.line_too_long", 0) >= 1, st
    server.wait_for(1)
    assert m.alive


def test_endless_line_in_data_bounded(moat_factory, server,
                                      monkeypatch):
    """100 MiB without a line end inside DATA: moat keeps reading (it is
    content), stores nothing past message_size_max, answers 552 at the
    end; memory stays bounded and other clients are served meanwhile."""
    small_asan_quarantine(monkeypatch)
    m = moat_factory([server])
    settle(m)
    rss0 = rss_kb(m.pid)
    peak = [rss0]
    res = {}

    def stream():
        with RawSMTP(m.port, timeout=30) as c:
            banner(c)
            ehlo(c)
            start_txn(c)
            assert c.cmd("DATA")[0] == 354
            chunk = b"B" * 65536
            t0 = time.monotonic()
            for _ in range(1600):                 # 100 MiB
                c.sock.sendall(chunk)
                if time.monotonic() - t0 > 40:
                    break
            c.send(b"\r\n.\r\n")
            res["reply"] = c.reply()
            res["time"] = time.monotonic() - t0

    t = threading.Thread(target=stream)
    t.start()
    send_ok(m.port)
    while t.is_alive():
        peak.append(rss_kb(m.pid))
        t.join(0.1)
    code, lines = res["reply"]
    assert code == 552 and lines[0].startswith("552 5.3.4"), lines
    assert max(peak) - rss0 < 100 * 1024, (
        f"RSS grew {(max(peak) - rss0) // 1024} MB")
    assert len(server.wait_for(1)) == 1


# ---------------------------------------------------------------------------
# other protocols

TLS_HELLO = (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
             + bytes(range(0x20, 0x40)) + b"\x00\x02\x13\x01\x01\x00")
NON_SMTP = [b"GET / HTTP/1.1\r\n", b"POST /login HTTP/1.1\r\n",
            b"CONNECT mail.example.test:443 HTTP/1.1\r\n", b"Host: x\r\n",
            b"User-Agent: x\r\n", TLS_HELLO]


def test_non_smtp_dropped(moat_factory, server):
    m = moat_factory([server])
    before = settle(m)
    for req in NON_SMTP:
        with RawSMTP(m.port) as c:
            banner(c)
            c.send(req)
            assert closed(c), f"{req!r}: still open"
            assert c.tail == b"", f"{req!r}: drop answered {c.tail!r}"
    ref, _ = wait_refused(m, before, "proto.non_smtp", n=len(NON_SMTP))
    assert ref == {"proto.non_smtp": len(NON_SMTP)}, ref
    good_clients_pass(m, server)


# ---------------------------------------------------------------------------
# bare LF / CR: SMTP smuggling

END_VARIANTS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r\r\n",
                b"\r.\r\n", b"\n.\r", b"\r\n.\r", b"\r\n.\rX\r\n", b"\n..\n"]


def smuggling_body(variant, smuggled_id):
    """One outer message whose text holds a fake end of data and a forged
    second transaction, then the real terminator."""
    outer = make_message(subject="outer", body=b"first part")
    forged = (f"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<{RCPT}>\r\n"
              f"DATA\r\n").encode() + make_message(
                  msg_id=smuggled_id, subject="smuggled",
                  sender="ceo@" + DOMAIN, body=b"wire money\r\n")
    return outer + variant + forged + b".\r\n"


def send_raw_message(port, data):
    with RawSMTP(port) as c:
        banner(c)
        ehlo(c)
        start_txn(c)
        assert c.cmd("DATA")[0] == 354
        c.send(data)
        code, lines = c.reply()
        c.cmd("QUIT")
        return code, lines


BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def test_smuggling_refused(moat_factory, server):
    m = moat_factory([server])
    before = settle(m)
    for v in END_VARIANTS:
        code, lines = send_raw_message(m.port,
                                       smuggling_body(v, new_msgid()))
        assert code == 550 and lines[0].startswith("550 5.5.2"), (v, lines)
    ref, _ = wait_refused(m, before, "proto.bare_lf", n=len(END_VARIANTS))
    assert ref == {"proto.bare_lf": len(END_VARIANTS)}, ref
    time.sleep(0.5)
    assert server.snapshot() == [] and server.transactions == 0
    assert m.queue_count() == 0
    good_clients_pass(m, server)


def test_smuggling_normalised(moat_factory, server):
    m = moat_factory([server], smtp={"bare_lf_normalise": "yes"})
    before = settle(m)
    smuggled = []
    for v in END_VARIANTS:
        sid = new_msgid()
        smuggled.append(sid)
        code, lines = send_raw_message(m.port, smuggling_body(v, sid))
        assert code == 250, (v, lines)
    got = server.wait_for(len(END_VARIANTS))
    time.sleep(0.5)
    got = server.snapshot()
    assert len(got) == len(END_VARIANTS), got
    assert server.transactions == len(END_VARIANTS)
    for d in got:
        assert d.mail_from == SENDER and d.rcpts == [RCPT], d
        assert d.msgid not in smuggled, d
        assert b"Subject: outer" in d.content, d
        assert b"wire money" in d.content, "forged part lost, not content"
        bad = BARE.search(d.content)
        assert bad is None, (f"bare CR/LF reached the server at "
                             f"{bad.start()}: {d.content!r}")
    ref, obs = before.delta()
    assert not ref and not obs, (ref, obs)


def test_helo_control_bytes_not_relayed(moat_factory, server):
    """guard.helo observes by default, so a HELO name holding control
    bytes is taken; it goes into the Received header.  With
    bare_lf_normalise the command check lets a bare CR through: it must
    not reach the protected server as a forged header line."""
    m = moat_factory([server], smtp={"bare_lf_normalise": "yes"})
    sid = new_msgid()
    with RawSMTP(m.port) as c:
        banner(c)
        c.send(b"EHLO evil.test\rX-Injected: yes\x0b\r\n")
        code, lines = c.reply()
        assert code == 250, lines
        start_txn(c)
        assert c.cmd("DATA")[0] == 354
        c.send(make_message(msg_id=sid) + b".\r\n")
        code, lines = c.reply()
        assert code == 250, lines
        c.cmd("QUIT")
    got = server.wait_for(1)
    d = [x for x in got if x.msgid == sid][0]
    bad = BARE.search(d.content)
    assert bad is None, f"bare CR/LF reached the server: {d.content!r}"
    assert b"\x0b" not in d.content, d.content


def test_bare_lf_in_commands(moat_factory, server):
    """guard.bare_lf covers command lines too (configuration.md): a
    command ended by a bare LF, or holding a bare CR, is refused."""
    m = moat_factory([server])
    before = settle(m)
    for data in (b"EHLO client.test\n", b"NOOP\rRSET\r\n"):
        with RawSMTP(m.port) as c:
            banner(c)
            c.send(data)
            code, lines = c.reply()
            assert code == 554 and lines[-1].startswith("554 5.7.1"), (
                data, lines)
            assert closed(c)
    ref, _ = wait_refused(m, before, "proto.bare_lf", n=2)
    assert ref == {"proto.bare_lf": 2}, ref
    good_clients_pass(m, server)

    # bare_lf_normalise takes a bare LF as a line end, in commands too.
    m2 = moat_factory([server], smtp={"bare_lf_normalise": "yes"})
    before = settle(m2)
    with RawSMTP(m2.port) as c:
        banner(c)
        c.send(b"EHLO client.test\n")
        assert c.reply()[0] == 250
        assert c.cmd("QUIT")[0] == 221
    ref, obs = before.delta()
    assert not ref and not obs, (ref, obs)


# ---------------------------------------------------------------------------
# pipelining abuse

def _expect_pipelining_reject(c):
    code, lines = c.reply()
    assert code == 554 and lines[-1].startswith("554 5.7.1"), lines
    assert closed(c)


def test_pipelining_abuse(moat_factory, server):
    m = moat_factory([server])
    before = settle(m)
    mail = f"MAIL FROM:<{SENDER}>\r\n"
    rcpt = f"RCPT TO:<{RCPT}>\r\n"

    # HELO offers no PIPELINING: MAIL and RCPT in one write.
    with RawSMTP(m.port) as c:
        banner(c)
        assert c.cmd("HELO client.test")[0] == 250
        c.send(mail + rcpt)
        _expect_pipelining_reject(c)
    # EHLO and MAIL in the same packet: EHLO ends a group.
    with RawSMTP(m.port) as c:
        banner(c)
        c.send("EHLO client.test\r\n" + mail)
        _expect_pipelining_reject(c)
    # The message text before the 354.
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        start_txn(c)
        c.send(b"DATA\r\n" + stuff(make_message()))
        _expect_pipelining_reject(c)
    ref, _ = wait_refused(m, before, "proto.pipelining", n=3)
    assert ref == {"proto.pipelining": 3}, ref
    time.sleep(0.3)
    assert server.snapshot() == []
    # MAIL, RCPT, RCPT, DATA in one write after EHLO is fine.
    good_clients_pass(m, server)


# ---------------------------------------------------------------------------
# error and junk limits

def test_error_limits(moat_factory, server):
    m = moat_factory([server], extra=guard_block(errors="tempfail"))
    before = settle(m)
    times = []
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        for i in range(1, 10):
            t0 = time.monotonic()
            code, lines = c.cmd("XYZZY")
            times.append(time.monotonic() - t0)
            assert code == 500, (i, lines)
        t0 = time.monotonic()
        code, lines = c.cmd("XYZZY")
        assert code == 421 and lines[-1].startswith("421 4.7.0"), lines
        assert closed(c)
    assert all(t < 0.5 for t in times[:3]), times
    assert all(t >= 0.8 for t in times[3:]), (
        f"replies past errors_soft not delayed: {times}")
    ref, _ = wait_refused(m, before, "proto.errors")
    assert ref.get("proto.errors") == 1, ref
    assert ref.get("proto.unknown_command") >= 9, ref


def test_errors_default_drop(moat_factory, server):
    m = moat_factory([server], extra=guard_block(error_delay="0"))
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        for i in range(9):
            assert c.cmd("XYZZY")[0] == 500
        c.send(b"XYZZY\r\n")
        assert closed(c)
        assert c.tail == b"", c.tail
    wait_refused(m, before, "proto.errors")
    good_clients_pass(m, server)


def test_junk_limit(moat_factory, server):
    m = moat_factory([server])
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        for i in range(50):
            assert c.cmd("NOOP")[0] == 250, i
        c.send(b"NOOP\r\n")
        assert closed(c)
        assert c.tail == b"", c.tail
    ref, _ = wait_refused(m, before, "proto.junk")
    assert ref == {"proto.junk": 1}, ref
    good_clients_pass(m, server)


def test_junk_count_resets_after_mail(moat_factory, server):
    """guard.junk counts commands *without mail*: an MTA that sends RSET
    and NOOP around each of many messages on one connection is fine."""
    m = moat_factory([server])
    before = settle(m)
    n = 30
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        for i in range(n):
            assert c.cmd("RSET")[0] == 250, i
            assert c.cmd("NOOP")[0] == 250, i
            start_txn(c)
            assert c.cmd("DATA")[0] == 354
            c.send(stuff(make_message()))
            assert c.reply()[0] == 250, (i, c.transcript[-3:])
        assert c.cmd("QUIT")[0] == 221
    server.wait_for(n, timeout=30)
    ref, obs = before.delta()
    assert not ref and not obs, (ref, obs)


# ---------------------------------------------------------------------------
# command sanity

def test_command_sanity(moat_factory, server):
    m = moat_factory([server], extra=guard_block(helo="reject",
                                                 errors_soft=100,
                                                 errors_hard=200))
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        code, lines = c.cmd(f"MAIL FROM:<{SENDER}>")
        assert code == 503 and lines[0].startswith("503 5.5.1"), lines
        ehlo(c)
        code, lines = c.cmd(b"NOOP a\x00b")
        assert code == 500 and lines[0].startswith("500 5.5.2"), lines
        code, lines = c.cmd(b"NOOP caf\xc3\xa9")
        assert code == 500 and lines[0].startswith("500 5.5.2"), lines
        code, lines = c.cmd(f"RCPT TO:<{RCPT}>")
        assert code == 503, lines
        code, lines = c.cmd("DATA")
        assert code in (503, 554), lines
        assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        code, lines = c.cmd(f"RCPT TO:<@a.test,@b.test:u@{DOMAIN}>")
        assert code == 501, lines
        code, lines = c.cmd(f"RCPT TO:<{'l' * 65}@{DOMAIN}>")
        assert code == 501, lines
        code, lines = c.cmd("DATA")
        assert code in (503, 554), lines
        assert c.cmd(f"RCPT TO:<{RCPT}>")[0] == 250   # still usable
        assert c.cmd("RSET")[0] == 250
    with RawSMTP(m.port) as c:
        banner(c)
        code, lines = c.cmd("EHLO !!not-a-name!!")
        assert code == 554 and lines[-1].startswith("554 5.7.1"), lines
        assert closed(c)
    ref, _ = wait_refused(m, before, "proto.bad_helo")
    for r in ("proto.nul", "proto.8bit_command", "proto.sequence",
              "proto.bad_address"):
        assert ref.get(r, 0) >= 1, (r, ref)
    good_clients_pass(m, server)


# ---------------------------------------------------------------------------
# session limits

def test_session_limits(moat_factory, server):
    m = moat_factory([server], smtp={"timeout_command": "2s",
                                     "timeout_session": "3s"})
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        t0 = time.monotonic()
        code, lines = c.reply()
        dt = time.monotonic() - t0
        assert code == 421 and lines[0].startswith("421 4.4.2"), lines
        assert 1.5 <= dt < 3, dt
        assert closed(c)
    wait_refused(m, before, "proto.timeout")

    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        t0 = time.monotonic()
        code = 250
        for _ in range(20):
            code, lines = c.cmd("NOOP")
            if code != 250:
                break
            time.sleep(0.5)
        dt = time.monotonic() - t0
        assert code == 421 and lines[0].startswith("421 4.4.2"), lines
        assert 2.5 <= dt < 4.5, dt
        assert closed(c)
    ref, _ = wait_refused(m, before, "proto.session_time")
    good_clients_pass(m, server)


def test_session_limit_while_tarpitted(moat_factory, server):
    """The session ends while a reply is held by the error tarpit: the
    held reply and the 421 still reach the client."""
    m = moat_factory([server], smtp={"timeout_session": "2s"},
                     extra=guard_block(errors_soft=1, error_delay="10s"))
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        assert c.cmd("XYZZY")[0] == 500
        t0 = time.monotonic()
        c.send(b"XYZZY\r\n")
        codes = []
        try:
            while len(codes) < 2:
                codes.append(c.reply()[0])
        except ConnectionError:
            pass
        assert 421 in codes, f"no 421 before the close: {codes}"
        assert time.monotonic() - t0 < 5
    wait_refused(m, before, "proto.session_time")


def test_data_min_rate_trickle_closed(moat_factory, server):
    # 20 bytes a second against a 1 KiB/s floor: past the 1 s grace the
    # session ends with 421 4.4.2 and nothing is delivered.
    m = moat_factory([server], smtp={"data_min_rate": "1kb",
                                     "data_rate_grace": "1s"})
    before = settle(m)
    with RawSMTP(m.port) as c:
        banner(c)
        ehlo(c)
        assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert c.cmd(f"RCPT TO:<slow@{DOMAIN}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, lines = 0, []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                c.send(b"x" * 18 + b"\r\n")
            except OSError:
                break
            c.sock.settimeout(1.0)
            try:
                code, lines = c.reply()
                break
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
        assert code == 421 and lines[0].startswith("421 4.4.2"), lines
    wait_refused(m, before, "proto.slow_data")
    time.sleep(0.5)
    assert server.snapshot() == []
    good_clients_pass(m, server)


def test_data_min_rate_good_client(moat_factory, server):
    m = moat_factory([server], smtp={"data_min_rate": "1kb"})
    settle(m)
    send_ok(m.port, make_message(body=b"y" * 70 + b"\r\n" * 1000))
    good_clients_pass(m, server)


# ---------------------------------------------------------------------------
# observe mode

GUARD_CHECKS = ["pregreet", "non_smtp", "line_too_long", "bare_lf",
                "pipelining", "errors", "junk", "helo"]
GUARD_REASONS = ["proto.pregreet", "proto.non_smtp", "proto.line_too_long",
                 "proto.bare_lf", "proto.pipelining", "proto.errors",
                 "proto.junk", "proto.bad_helo"]


def test_observe_mode(moat_factory, server):
    kv = {k: "log" for k in GUARD_CHECKS}
    m = moat_factory([server], extra=guard_block(greet_pause="1s", **kv))
    before = settle(m)
    with RawSMTP(m.port) as c:
        assert c._line().startswith("220-")
        c.send(b"EHLO early.test\r\n")                    # pregreet
        assert c.reply()[0] == 220
        assert c.reply()[0] == 250
        assert c.cmd("GET / HTTP/1.1")[0] == 500          # non_smtp
        c.send(LONG)                                      # line_too_long
        assert c.reply()[0] == 500
        c.send(b"NOOP\n")                                 # bare LF
        assert c.reply()[0] == 250
        c.send(b"NOOP\r\nNOOP\r\n")                       # pipelining
        assert c.reply()[0] == 250 and c.reply()[0] == 250
        assert c.cmd("EHLO !!bad!!")[0] == 250            # helo
        start_txn(c)                                      # bare LF
        assert c.cmd("DATA")[0] == 354
        c.send(smuggling_body(b"\n.\n", new_msgid()))
        assert c.reply()[0] == 250
        for i in range(10):                               # errors
            assert c.cmd("XYZZY")[0] == 500, i
        for i in range(51):                               # junk
            assert c.cmd("NOOP")[0] == 250, i
        assert c.cmd("QUIT")[0] == 221
    ref, obs = before.delta()
    for r in GUARD_REASONS:
        assert ref.get(r, 0) == 0, f"{r} refused in observe mode: {ref}"
        assert obs.get(r, 0) >= 1, f"{r} not observed: {obs}"
    got = server.wait_for(1)
    assert len(got) == 1 and b"wire money" in got[0].content
