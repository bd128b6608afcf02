"""
Configuration check (-t), reload on SIGHUP and shutdown on SIGTERM.
"""

import re
import signal
import subprocess
import time

import pytest

from conftest import (RawSMTP, Moat, make_message, moat_binary, new_msgid,
                      send_ok)

pytestmark = pytest.mark.core


def check(conf):
    p = subprocess.run([moat_binary("moatd"), "-c", conf, "-t"],
                       capture_output=True, timeout=10)
    return p.returncode, p.stderr.decode(errors="replace")


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def ehlo_size(port):
    with RawSMTP(port) as c:
        c.reply()
        _, lines = c.cmd("EHLO client.test")
    for l in lines:
        m = re.match(r"250[ -]SIZE (\d+)", l, re.I)
        if m:
            return int(m.group(1))
    return None


def test_config_check_good(tmp_path, server_factory):
    m = Moat(tmp_path, [server_factory(start=False)])
    rc, err = check(m.conf)
    assert rc == 0, err


@pytest.mark.parametrize("key,bad", [
    ("message_size_max", "banana"),       # not a size
    ("retry_min", "5parsecs"),            # not a time
    ("log_level", '"loud"'),              # not one of err|warn|info|debug
])
def test_config_check_bad_value_names_file_line_key(tmp_path, server_factory,
                                                    key, bad):
    m = Moat(tmp_path, [server_factory(start=False)])
    text = m.config_text()
    text = re.sub(rf"\b{key} = [^;]*;", f"{key} = {bad};", text)
    text = text.replace(f"{key} = {bad};", f"\n  {key} = {bad};\n")
    m.write_config(text)
    rc, err = check(m.conf)
    want = f"{m.conf}:{line_of(text, key + ' = ' + bad)}:"
    assert rc == 1, err
    assert want in err, f"want {want!r} in {err!r}"
    assert key in err


def test_config_check_unknown_key_and_syntax(tmp_path, server_factory):
    m = Moat(tmp_path, [server_factory(start=False)])
    text = m.config_text() + "no_such_key = 1;\n"
    m.write_config(text)
    rc, err = check(m.conf)
    assert rc == 1 and f"{m.conf}:{line_of(text, 'no_such_key')}:" in err, err
    assert "no_such_key" in err
    m.write_config(m.config_text() + 'domain "x.test" { server = [\n')
    rc, err = check(m.conf)
    assert rc == 1 and re.search(rf"{re.escape(m.conf)}:\d+:", err), err


def test_sighup_with_bad_file_keeps_serving(moat, server):
    good = moat.config_text()
    moat.write_config(good.replace("message_size_max = 1mb;",
                                   "message_size_max = banana;"))
    moat.signal(signal.SIGHUP)
    # refused with file:line: key: reason, in the log
    # (the key may be given with its block: smtp.message_size_max)
    moat.wait_log(re.escape(moat.conf) + r":\d+: ([\w.]+\.)?message_size_max",
                  5)
    time.sleep(0.5)
    assert moat.alive
    assert ehlo_size(moat.port) == 1048576
    mid = new_msgid()
    send_ok(moat.port, make_message(mid))
    assert server.wait_for(1)[0].msgid == mid
    assert moat.ctl_ok("status")["pid"] == moat.pid


def test_sighup_with_good_file_applies(moat, server):
    moat.write_config(moat.config_text(smtp={"message_size_max": "2mb"}))
    moat.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ehlo_size(moat.port) != 2097152:
        time.sleep(0.1)
    assert ehlo_size(moat.port) == 2097152
    assert moat.alive
    send_ok(moat.port, make_message())
    server.wait_for(1)


def test_sigterm_with_open_session_gives_421(moat, server):
    c = RawSMTP(moat.port)
    try:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        moat.signal(signal.SIGTERM)
        code, lines = c.reply()
        assert code == 421, lines
        assert lines[-1].startswith("421 4."), lines
    finally:
        c.close()
    assert moat.proc.wait(10) == 0
    assert not moat.alive
