"""
Core relay: what a client sends through moat reaches the protected server
byte for byte, with a Received header prepended; refusals carry the right
codes and leave nothing behind.
"""

import hashlib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import (HOSTNAME, SENDER, QID_RE, RawSMTP, free_port,
                      enhanced_ok, make_message, new_msgid, send_mail,
                      send_ok, split_prepended, stuff, first_difference,
                      wait_until)

pytestmark = pytest.mark.core


def received_headers(prefix):
    """The header fields (unfolded) in the bytes moat prepended."""
    text = prefix.decode(errors="replace")
    assert text.endswith("\r\n") or text == "", repr(text[-50:])
    fields = []
    for line in text.split("\r\n")[:-1]:
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        else:
            assert re.match(r"^[!-9;-~]+:", line), \
                f"prepended line is not a header field: {line!r}"
            fields.append(line)
    return fields


def assert_relayed(server, original, n=1, timeout=15):
    """Waits for n messages; each must be a Received header block plus
    exactly the original bytes.  Returns the delivered messages."""
    msgs = server.wait_for(n, timeout)
    for m in msgs:
        prefix = split_prepended(m.content, original)
        fields = received_headers(prefix)
        assert fields and fields[0].lower().startswith("received:"), fields
    return msgs


# --- banner, EHLO, reply codes ------------------------------------------

def test_banner_and_ehlo_extensions(moat):
    with RawSMTP(moat.port) as c:
        code, lines = c.reply()
        assert code == 220
        assert lines[0].startswith(f"220 {HOSTNAME} ESMTP"), lines
        code, lines = c.cmd("EHLO client.test")
        assert code == 250
        ext = [l[4:].upper() for l in lines[1:]]
        assert "PIPELINING" in ext
        assert "SIZE 1048576" in ext, ext
        assert "8BITMIME" in ext
        assert "ENHANCEDSTATUSCODES" in ext


def test_enhanced_status_code_on_every_reply(moat, server):
    """RFC 2034 exempts only the greeting, the EHLO/HELO replies and 3xx
    (there is no enhanced class 3: "354" stays bare)."""
    msg = make_message()
    cmds = ["NOOP", "MAIL FROM:<s@sender.test>",
            "RCPT TO:<user@example.test>", "RCPT TO:<x@elsewhere.test>",
            "VRFY user", "DATA", stuff(msg), "RSET", "NOOP",
            "MAIL FROM:<s@sender.test> SIZE=99999999",
            "FROBNICATE", "RCPT TO:<user@example.test>", "HELP", "QUIT"]
    seen = []
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        for cmd in cmds:
            if isinstance(cmd, bytes):
                c.send(cmd)
                code, lines = c.reply()
            else:
                code, lines = c.cmd(cmd)
            for line in lines:
                seen.append((cmd if isinstance(cmd, str) else "<body>", line))
    bad = [(c, l) for c, l in seen
           if not l.startswith("3") and not enhanced_ok(l)]
    assert not bad, f"replies without a matching enhanced code: {bad}"
    replies = dict((c, l) for c, l in seen)
    assert replies["QUIT"].startswith("221 2.")
    assert replies["FROBNICATE"][0] == "5"
    assert replies["<body>"].startswith("250 2.0.0")
    server.wait_for(1)


def test_vrfy_252(moat):
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        code, lines = c.cmd("VRFY user@example.test")
        assert code == 252 and enhanced_ok(lines[-1]), lines


# --- byte exactness --------------------------------------------------------

DOT_BODY = (b".\r\n"
            b"..\r\n"
            b".foo\r\n"
            b"...\r\n"
            b"..bar\r\n"
            b" .\r\n"
            b"a line ending in a dot.\r\n"
            b"\r\n"
            b".\r\n"
            b"end\r\n")


def test_dot_lines_byte_exact_smtplib(moat, server):
    msg = make_message(body=DOT_BODY)
    send_ok(moat.port, msg)
    assert_relayed(server, msg)


def test_dot_lines_byte_exact_raw_pipelined(moat, server):
    """The whole transaction in one write (PIPELINING), stuffed by hand."""
    msg = make_message(body=DOT_BODY)
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        c.send(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.test>\r\n"
               b"DATA\r\n")
        assert c.reply()[0] == 250
        assert c.reply()[0] == 250
        assert c.reply()[0] == 354
        c.send(stuff(msg))
        code, lines = c.reply()
        assert code == 250, lines
        assert c.cmd("QUIT")[0] == 221
    got = assert_relayed(server, msg)[0]
    assert got.mail_from == "s@sender.test"
    assert got.rcpts == ["u@example.test"]


def test_8bit_body_byte_exact(moat, server):
    eight = bytes(b for b in range(1, 256) if b not in (10, 13))
    body = (eight + b"\r\n" + "Grüße, ça va? ✓".encode() + b"\r\n"
            + b"\xff\xfe\x80.\r\n")
    msg = make_message(body=body, headers=["MIME-Version: 1.0",
                       "Content-Type: text/plain; charset=utf-8",
                       "Content-Transfer-Encoding: 8bit"])
    send_ok(moat.port, msg, mail_options=["BODY=8BITMIME"])
    got = assert_relayed(server, msg)[0]
    assert any(o.upper() == "BODY=8BITMIME" for o in got.mail_options), \
        f"8BITMIME not passed on to the protected server: {got.mail_options}"


def test_long_lines_byte_exact(moat, server):
    """998 characters is RFC 5321's limit for a text line (1000 with CRLF)."""
    body = (b"x" * 998 + b"\r\n"
            + b"." + b"y" * 997 + b"\r\n"
            + b"z" * 500 + b"\r\n")
    msg = make_message(body=body)
    send_ok(moat.port, msg)
    assert_relayed(server, msg)


def test_ten_mib_message(moat_factory, server):
    m = moat_factory([server], smtp={"message_size_max": "12mb"})
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"   # 74
    lines = []
    size = 0
    i = 0
    while size < 10 * 1024 * 1024:
        l = (b"." if i % 97 == 0 else b"") + line
        lines.append(l)
        size += len(l)
        i += 1
    msg = make_message(body=b"".join(lines))
    r = send_ok(m.port, msg, timeout=60)
    got = server.wait_for(1, 60)[0]
    assert got.content.endswith(msg), first_difference(
        got.content[-len(msg):], msg)
    assert hashlib.sha256(got.content[-len(msg):]).digest() == \
        hashlib.sha256(msg).digest()
    assert r.qid


def test_several_recipients(moat, server):
    rcpts = [f"u{i}@example.test" for i in range(5)]
    msg = make_message()
    send_ok(moat.port, msg, rcpts=rcpts)
    wait_until(lambda: sorted(r for m in server.snapshot() for r in m.rcpts)
               == sorted(rcpts), 15, what="all recipients delivered")
    for m in server.snapshot():
        split_prepended(m.content, msg)
    time.sleep(0.5)
    assert sorted(r for m in server.snapshot() for r in m.rcpts) == \
        sorted(rcpts), "a recipient was delivered twice"


# --- refusals ---------------------------------------------------------------

def test_relay_denied(moat, server):
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        code, lines = c.cmd("RCPT TO:<victim@elsewhere.test>")
        assert code == 550 and lines[-1].startswith("550 5.7.1"), lines
        code, lines = c.cmd("RCPT TO:<victim@sub.example.test>")
        assert code == 550 and lines[-1].startswith("550 5.7.1"), lines
        code, lines = c.cmd("DATA")
        assert code in (503, 554), lines
    assert moat.queue_list()["count"] == 0
    time.sleep(1)
    assert server.snapshot() == []


def test_oversize_at_mail(moat, server):
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        code, lines = c.cmd("MAIL FROM:<s@sender.test> SIZE=1048577")
        assert code == 552 and lines[-1].startswith("552 5.3.4"), lines
        code, lines = c.cmd("MAIL FROM:<s@sender.test> SIZE=1000")
        assert code == 250, lines


def test_oversize_at_end_of_data(moat, server):
    body = (b"y" * 76 + b"\r\n") * (1100 * 1024 // 78)
    msg = make_message(body=body)
    assert len(msg) > 1024 * 1024
    r = send_mail(moat.port, msg)
    assert r.code == 552 and r.text.startswith("5.3.4"), r
    assert moat.queue_list()["count"] == 0
    assert moat.queue_files() == []
    time.sleep(1)
    assert server.snapshot() == []


def test_bare_lf_rejected(moat, server):
    msg = make_message(body=b"line one\nline two\r\n")
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<u@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(msg))
        code, lines = c.reply()
        assert code == 550 and lines[-1].startswith("550 5.5.2"), lines
    time.sleep(1)
    assert server.snapshot() == []
    assert moat.queue_list()["count"] == 0


# --- trace and identity ---------------------------------------------------

def test_received_header_has_session_id(moat, server):
    msg = make_message()
    r = send_ok(moat.port, msg)
    got = assert_relayed(server, msg)[0]
    fields = received_headers(split_prepended(got.content, msg))
    received = fields[0]
    assert HOSTNAME in received, received
    # The session id as the log has it, on a line that names this qid.
    log = moat.log()
    sess = None
    for line in log.splitlines():
        if r.qid in line:
            m = re.search(r"\bsession=([0-9A-Za-z._-]+)", line)
            if m:
                sess = m.group(1)
                break
    assert sess, f"no log line with qid={r.qid} and session=..."
    assert sess in received, f"session {sess} not in {received!r}"


def test_qid_matches_queue_file_and_log(moat_factory, server_factory):
    srv = server_factory(start=False)          # protected server down
    m = moat_factory([srv])
    r = send_ok(m.port, make_message())
    assert r.text.startswith(f"2.0.0 Ok: queued as {r.qid}"), r.text
    assert QID_RE.match(r.qid)
    assert r.qid in m.queue_qids()
    names = [os.path.basename(p) for p in m.queue_files()]
    assert r.qid in names, names
    m.wait_log(re.escape(r.qid))
    srv.start()
    srv.wait_for(1, 20)
    m.wait_queue_empty(20)
    assert r.qid not in [os.path.basename(p) for p in m.queue_files()]


def test_swaks(moat, server):
    assert shutil.which("swaks"), "swaks not installed (apt install swaks)"
    mid = new_msgid()
    p = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{moat.port}",
         "--to", "x@example.test", "--from", SENDER,
         "--add-header", f"X-Test-Id: {mid}", "--body", "hello from swaks",
         "--timeout", "15"],
        capture_output=True, timeout=30)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out[-2000:]
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9a-f]{18}", out), \
        out[-2000:]
    got = server.wait_for(1)[0]
    assert f"X-Test-Id: {mid}".encode() in got.content
    assert got.rcpts == ["x@example.test"]


def test_listen_on_ipv4_and_ipv6(moat_factory, server):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port6 = s.getsockname()[1]
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine: {e}")
    port4 = free_port()
    m = moat_factory([server], port=port4,
                     listen=[f"127.0.0.1:{port4}", f"[::1]:{port6}"])
    ids = [new_msgid(), new_msgid()]
    send_ok(port4, make_message(ids[0]))
    with smtplib.SMTP("::1", port6, local_hostname="client.test",
                      timeout=10) as s:
        s.ehlo()
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("user@example.test")[0] == 250
        code, text = s.data(make_message(ids[1]))
        assert code == 250, text
    server.wait_for(2)
    server.assert_exactly_once(ids)
    assert m.alive


def test_log_lines_are_key_value(moat, server):
    send_ok(moat.port, make_message())
    with RawSMTP(moat.port) as c:
        c.reply()
        c.cmd("EHLO client.test")
        c.cmd("RCPT TO:<x@example.test>")          # out of sequence
        c.cmd("MAIL FROM:<s@sender.test>")
        c.cmd("RCPT TO:<x@elsewhere.test>")        # relay denied
    server.wait_for(1)
    time.sleep(0.5)
    lines = [l for l in moat.log().splitlines()
             if l and not l.startswith("--- test:")]
    assert lines
    bad = [l for l in lines if not re.search(r"\bevent=\S", l)]
    assert not bad, f"log lines without event=: {bad[:5]}"
    assert any("5.7.1" in l or "relay" in l for l in lines), \
        "the relay refusal is not logged"
