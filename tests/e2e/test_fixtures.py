"""
Self-checks of the fixtures against the protected server alone (no moatd):
if these fail, the moat tests cannot be trusted.  They run without a
build of moat.
"""

import smtplib

import pytest

from conftest import (DOMAIN, RawSMTP, make_message, new_msgid, send_mail,
                      stuff, ProtectedServer, wait_until)

TRICKY = (b".\r\n"
          b"..\r\n"
          b".foo\r\n"
          b"...bar\r\n"
          b" .\r\n"
          b"ends with dot.\r\n"
          + bytes(range(0x80, 0x100)) + b"\r\n"
          + b"x" * 5000 + b"\r\n"
          b"last line without anything special\r\n")


def test_server_records_exact_bytes_smtplib(server):
    msg = make_message(body=TRICKY)
    r = send_mail(server.port, msg, mail_options=["BODY=8BITMIME"])
    assert r.code == 250, r
    got = server.wait_for(1, 5)[0]
    assert got.content == msg
    assert got.mail_from == "sender@sender.test"
    assert got.rcpts == ["user@" + DOMAIN]
    assert "BODY=8BITMIME" in got.mail_options


def test_server_records_exact_bytes_raw(server):
    msg = make_message(body=TRICKY)
    with RawSMTP(server.port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<a@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(stuff(msg))
        assert c.reply()[0] == 250
    got = server.wait_for(1, 5)[0]
    assert got.content == msg
    assert got.mail_from == ""


def test_server_policies(server):
    server.fail_next(1, "451 4.3.0 later")
    r = send_mail(server.port, make_message())
    assert r.code == 451
    assert server.snapshot() == []
    server.reject_rcpt("bad@example.test")
    r = send_mail(server.port, make_message(),
                  rcpts=["good@example.test", "bad@example.test"])
    assert r.code == 250
    assert r.refused["bad@example.test"][0] == 550
    got = server.wait_for(1, 5)
    assert got[0].rcpts == ["good@example.test"]
    server.clear_policies()
    server.set_policy(lambda st, frm, rc: "451 4.7.1 no" if frm else None)
    assert send_mail(server.port, make_message()).code == 451
    assert send_mail(server.port, make_message(), sender="").code == 250
    assert server.transactions == 4


def test_server_stop_start_same_port(server):
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        send_mail(port, make_message(), timeout=2)
    server.start()
    assert server.port == port
    ids = [new_msgid() for _ in range(3)]
    for i in ids:
        assert send_mail(port, make_message(i)).code == 250
    server.wait_for(3, 5)
    assert server.assert_exactly_once(ids) == 0
    # stop with a connection open: the client sees it closed
    s = smtplib.SMTP("127.0.0.1", port, timeout=5)
    s.ehlo()
    server.stop()
    with pytest.raises((smtplib.SMTPException, OSError)):
        s.mail("a@b.test")
        s.rcpt("c@example.test")
    s.close()
    server.start()
    assert send_mail(port, make_message()).code == 250


def test_wait_for_times_out(server):
    with pytest.raises(AssertionError):
        server.wait_for(1, 0.3)
    with pytest.raises(AssertionError):
        wait_until(lambda: False, 0.2)


def test_exactly_once_detects_duplicates(server):
    i = new_msgid()
    send_mail(server.port, make_message(i))
    send_mail(server.port, make_message(i))
    server.wait_for(2, 5)
    with pytest.raises(AssertionError):
        server.assert_exactly_once([i])
    assert server.assert_exactly_once([i], allow_dups=True) == 1
    with pytest.raises(AssertionError):
        server.assert_exactly_once([new_msgid()])


def test_two_servers_independent(server_factory):
    a = server_factory(name="a")
    b = server_factory(name="b")
    assert a.port != b.port
    send_mail(b.port, make_message())
    b.wait_for(1, 5)
    assert a.snapshot() == []
    assert isinstance(a, ProtectedServer)
