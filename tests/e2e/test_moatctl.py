"""
moatctl against a running moatd: every queue command, status, summary,
and the exit codes (0 ok, 1 daemon error, 2 usage, 3 cannot connect).

Messages are "parked": the protected server is down and retries are far
apart (60 s), so they stay in the queue until the test flushes them.
"""

import os
import time

import pytest

from conftest import (DOMAIN, SENDER, make_message, new_msgid, send_ok,
                      wait_until)

pytestmark = pytest.mark.core

STATES = {"ready", "active", "deferred", "held"}
CIRCUITS = {"closed", "open", "half_open"}
UNKNOWN = "0" * 18
SLOW = {"retry_min": "60s", "retry_max": "120s", "circuit_probe": "60s",
        "circuit_failures": "20"}


class Parked:
    def __init__(self, moat, srv, qids, mids):
        self.moat, self.srv, self.qids, self.mids = moat, srv, qids, mids


def park(moat_factory, server_factory, n=3):
    srv = server_factory(start=False)
    m = moat_factory([srv], delivery=SLOW)
    qids, mids = [], []
    for i in range(n):
        mid = new_msgid()
        r = send_ok(m.port, make_message(mid, subject=f"parked {i}"),
                    rcpts=[f"u{i}@{DOMAIN}", f"v{i}@{DOMAIN}"])
        qids.append(r.qid)
        mids.append(mid)
    # Each had its first attempt (refused) and now waits.
    wait_until(lambda: all(x["state"] == "deferred" and x["attempts"] >= 1
                           for x in m.queue_list()["messages"]), 10,
               what="all parked messages deferred")
    return Parked(m, srv, qids, mids)


@pytest.fixture
def parked(moat_factory, server_factory):
    return park(moat_factory, server_factory)


def entry(m, qid):
    for x in m.queue_list()["messages"]:
        if x["qid"] == qid:
            return x
    return None


def test_queue_list(parked):
    m = parked.moat
    j = m.queue_list()
    assert j["count"] == 3
    msgs = j["messages"]
    assert [x["qid"] for x in msgs] == parked.qids, "not oldest first"
    for x in msgs:
        for k in ("qid", "domain", "sender", "rcpt", "rcpts", "size", "age",
                  "state", "attempts", "next_attempt_in", "last_error"):
            assert k in x, f"missing {k}: {x}"
        assert x["domain"] == DOMAIN
        assert x["sender"] == SENDER
        assert x["rcpts"] == 2
        assert x["rcpt"].endswith("@" + DOMAIN)
        assert x["state"] in STATES
        assert x["size"] > 0
        assert x["next_attempt_in"] > 0
        assert x["last_error"], "the refused connection should be recorded"
    assert j["bytes"] == sum(x["size"] for x in msgs)


def test_queue_list_text(parked):
    rc, out = parked.moat.moatctl("queue", "list", json=False)
    assert rc == 0
    for q in parked.qids:
        assert q in out


def test_queue_show(parked):
    m = parked.moat
    j = m.ctl_ok("queue", "show", parked.qids[1])
    for k in ("qid", "domain", "sender", "rcpts", "size", "created", "age",
              "state", "attempts", "last_error", "helo", "client_ip",
              "session", "flags"):
        assert k in j, f"missing {k}: {j}"
    assert j["qid"] == parked.qids[1]
    assert j["rcpts"] == [f"u1@{DOMAIN}", f"v1@{DOMAIN}"]
    assert j["sender"] == SENDER
    assert j["helo"] == "client.test"
    assert j["client_ip"] == "127.0.0.1"
    assert j["session"]
    assert j["state"] == "deferred"
    assert abs(j["created"] - time.time()) < 60


def test_unknown_id_is_rc1(parked):
    m = parked.moat
    for cmd in (["queue", "show"], ["queue", "delete"], ["queue", "flush"],
                ["queue", "hold"], ["queue", "release"]):
        rc, _ = m.moatctl(*cmd, UNKNOWN)
        assert rc == 1, f"{cmd} {UNKNOWN}: rc={rc} {m.last_stderr!r}"
    assert m.queue_list()["count"] == 3


def test_delete(parked):
    m, srv = parked.moat, parked.srv
    victim = parked.qids[0]
    assert m.ctl_ok("queue", "delete", victim) == {"affected": 1}
    assert entry(m, victim) is None
    assert victim not in [os.path.basename(p) for p in m.queue_files()]
    rc, _ = m.moatctl("queue", "show", victim)
    assert rc == 1
    srv.start()
    assert m.ctl_ok("queue", "flush")["affected"] == 2
    srv.wait_for(2, 10)
    m.wait_queue_empty(10)
    time.sleep(1)
    seen = srv.by_msgid()
    assert parked.mids[0] not in seen
    srv.assert_exactly_once(parked.mids[1:])


def test_hold_and_release_one(parked):
    m, srv = parked.moat, parked.srv
    held = parked.qids[2]
    assert m.ctl_ok("queue", "hold", held) == {"affected": 1}
    assert entry(m, held)["state"] == "held"
    assert m.ctl_ok("status")["queue"]["held"] == 1
    srv.start()
    m.ctl_ok("queue", "flush")
    srv.wait_for(2, 10)
    time.sleep(1.5)
    assert parked.mids[2] not in srv.by_msgid(), "a held message went out"
    assert entry(m, held)["state"] == "held"
    assert m.ctl_ok("queue", "release", held) == {"affected": 1}
    e = entry(m, held)          # None if it already went out
    assert e is None or e["state"] != "held", e
    # Released: due now or at its old retry time; a flush makes it go now
    # (rc 1 if it already went between the two commands).
    assert m.moatctl("queue", "flush", held)[0] in (0, 1)
    srv.wait_for(3, 10)
    m.wait_queue_empty(10)
    srv.assert_exactly_once(parked.mids)


def test_hold_and_release_all(parked):
    m, srv = parked.moat, parked.srv
    assert m.ctl_ok("queue", "hold", "--all") == {"affected": 3}
    assert {x["state"] for x in m.queue_list()["messages"]} == {"held"}
    srv.start()
    m.ctl_ok("queue", "flush")
    time.sleep(1.5)
    assert srv.snapshot() == []
    assert m.ctl_ok("queue", "release", "--all") == {"affected": 3}
    m.moatctl("queue", "flush")
    srv.wait_for(3, 10)
    m.wait_queue_empty(10)
    srv.assert_exactly_once(parked.mids)


def test_flush_one_then_all(parked):
    m, srv = parked.moat, parked.srv
    srv.start()
    # Retries are 60 s apart: nothing moves without a flush.
    time.sleep(1)
    assert srv.snapshot() == []
    assert m.ctl_ok("queue", "flush", parked.qids[1]) == {"affected": 1}
    got = srv.wait_for(1, 10)
    assert got[0].msgid == parked.mids[1]
    time.sleep(1)
    assert len(srv.snapshot()) == 1
    assert m.ctl_ok("queue", "flush")["affected"] == 2
    srv.wait_for(3, 10)
    m.wait_queue_empty(10)
    srv.assert_exactly_once(parked.mids)


def test_queue_summary(parked):
    j = parked.moat.ctl_ok("queue", "summary")
    dests = [d for d in j["destinations"] if d["domain"] == DOMAIN]
    assert len(dests) == 1, j
    d = dests[0]
    for k in ("domain", "server", "circuit", "failures", "connections",
              "messages", "bytes", "oldest_age"):
        assert k in d, f"missing {k}: {d}"
    assert d["server"] == parked.srv.addr
    assert d["circuit"] in CIRCUITS
    assert d["messages"] == 3
    assert d["bytes"] > 0
    assert d["oldest_age"] >= 0
    assert d["failures"] >= 1


def test_status(parked):
    m = parked.moat
    j = m.ctl_ok("status")
    for k in ("version", "pid", "uptime", "sessions", "accepted", "queue",
              "destinations", "refused"):
        assert k in j, f"missing {k}: {j}"
    assert j["pid"] == m.pid
    assert j["accepted"] == 3
    assert j["sessions"]["total"] >= 3
    assert "active" in j["sessions"]
    q = j["queue"]
    for k in ("messages", "bytes", "held", "active", "delivered", "deferred",
              "bounced", "expired"):
        assert k in q, f"missing queue.{k}: {q}"
    assert q["messages"] == 3 and q["held"] == 0
    assert q["deferred"] >= 3
    rc, out = m.moatctl("status", json=False)
    assert rc == 0 and out.strip()


def test_no_daemon_is_rc3(moat_factory, server_factory):
    m = moat_factory([server_factory(start=False)], start=False)
    rc, _ = m.moatctl("status", json=False)
    assert rc == 3, m.last_stderr
    rc, _ = m.moatctl("queue", "list", json=False,
                      sock=os.path.join(m.dir, "nonexistent.sock"))
    assert rc == 3


def test_bad_usage_is_rc2(moat):
    for args in (["frobnicate"], ["queue"], ["queue", "bogus"],
                 ["queue", "show"], ["queue", "delete"],
                 ["queue", "show", "a", "b"]):
        rc, _ = moat.moatctl(*args, json=False)
        assert rc == 2, f"moatctl {' '.join(args)}: rc={rc}"
