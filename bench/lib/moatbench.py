"""Shared pieces of moat's benchmarks (bench/run, bench/dr).

What it does: picks free loopback ports, sets up and stops a private
Postfix instance configured as the same relay gateway as moat (see
/work/shared/PEERS.md), writes moat's config and runs build/moatd in the
foreground, runs smtp-sink and smtp-source with bounded counts and
timeouts, and parses their counters.

Invariants:
  - only 127.0.0.1 and ports checked free at start are used;
  - every process started here is recorded in PROCS and stopped by its
    PID (SIGTERM, then SIGKILL) on exit, including on SIGINT/SIGTERM;
    Postfix is stopped with `postfix -c DIR stop` (its master stops its
    children) and, failing that, by the PID in its master.pid file;
  - every long-lived process runs under `timeout`, so nothing outlives
    a crashed benchmark by more than its time bound.

Called by bench/lib/run.py and bench/lib/dr.py (Debian /usr/bin/python3).
"""

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROCS = []          # subprocess.Popen objects to stop by PID at exit
PF_DIRS = []        # Postfix instance dirs to stop at exit
WORKDIRS = []       # temp dirs to remove at exit unless KEEP
KEEP = False
_CLEANED = False


def log(msg):
    """Progress to stderr, so that stdout carries only the results."""
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def die(msg):
    log("fatal: " + msg)
    sys.exit(2)


# ---------------------------------------------------------------- cleanup

def stop_proc(p, grace=5.0):
    """Stop one process we started, by PID: SIGTERM, wait, SIGKILL."""
    if p.poll() is not None:
        return
    try:
        os.kill(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def cleanup():
    global _CLEANED
    if _CLEANED:
        return
    _CLEANED = True
    for d in PF_DIRS:
        pf_stop(d)
    for p in reversed(PROCS):
        stop_proc(p)
    for d in WORKDIRS:
        if KEEP:
            log("kept %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _on_signal(signum, _frame):
    log("signal %d: stopping everything we started" % signum)
    cleanup()
    sys.exit(128 + signum)


def install_cleanup():
    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)


def spawn(argv, bound, stdout=None, stderr=None, **kw):
    """Start a long-lived process under `timeout bound`, recorded for
    cleanup.  GNU timeout forwards our SIGTERM to its child."""
    full = ["timeout", "-k", "5", str(int(bound))] + list(argv)
    p = subprocess.Popen(full, stdout=stdout, stderr=stderr, **kw)
    PROCS.append(p)
    return p


# ------------------------------------------------------------------ ports

def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(n, lo=20000, hi=32000):
    """n distinct free ports below the ephemeral range, so that
    smtp-source's outgoing connections never take them."""
    got = []
    tries = 0
    while len(got) < n:
        tries += 1
        if tries > 5000:
            die("no free ports in %d-%d" % (lo, hi))
        p = random.randint(lo, hi)
        if p not in got and port_free(p):
            got.append(p)
    return got


def wait_port(port, proc=None, limit=15.0):
    """Wait until 127.0.0.1:port accepts; False if proc died or timeout."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def make_workdir(base=None):
    d = tempfile.mkdtemp(prefix="moat-bench-", dir=base)
    os.chmod(d, 0o755)      # the postfix user must traverse it
    WORKDIRS.append(d)
    return d


def fs_type(path):
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()
        return out[-1].split()[1]
    except Exception:
        return "?"


# ------------------------------------------------------------------- sink

class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1:port, counting with -c."""

    def __init__(self, workdir, name, port, bound):
        self.port = port
        self.out = os.path.join(workdir, "sink-%s.out" % name)
        self.fh = open(self.out, "wb")
        self.proc = spawn(["smtp-sink", "-c", "-u", "nobody", "-m", "2000",
                           "127.0.0.1:%d" % port, "1024"], bound,
                          stdout=self.fh, stderr=subprocess.STDOUT)
        if not wait_port(port, self.proc, 10):
            die("smtp-sink did not start on port %d" % port)

    def count(self):
        """Messages received so far (smtp-sink's last mesg= counter)."""
        try:
            with open(self.out, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 400))
                tail = f.read().decode("ascii", "replace")
        except OSError:
            return 0
        m = re.findall(r"mesg=(\d+)", tail)
        return int(m[-1]) if m else 0

    def stop(self):
        stop_proc(self.proc)
        self.fh.close()


# ---------------------------------------------------------------- postfix

def pf_setup(d, port, sinkport, extra_main=""):
    """A private Postfix relay gateway in d: config d/etc, queue d/queue,
    data d/data, log d/log/maillog; listens on 127.0.0.1:port; relays
    example.test to [127.0.0.1]:sinkport; treats 127.0.0.1 as the
    Internet (mynetworks is 127.0.0.254/32); no DNS; no per-client caps."""
    for sub in ("etc", "queue", "data", "log"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(os.path.join(d, "etc"), 0o755)
    os.chmod(os.path.join(d, "log"), 0o755)
    main = """\
# Generated by bench/lib/moatbench.py: a private relay gateway for the bench.
compatibility_level = 3.6
config_directory = {d}/etc
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
relay_domains = example.test
relay_transport = relay:[127.0.0.1]:{sink}
mynetworks = 127.0.0.254/32
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
maillog_file = {d}/log/maillog
maillog_file_prefixes = {d}/log
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
default_process_limit = 300
smtpd_banner = $myhostname ESMTP
{extra}
""".format(d=d, sink=sinkport, extra=extra_main)
    # chroot off (the queue is in a temp dir); smtpd on our port with a
    # process limit above the largest session count we drive.
    master = """\
# Generated by bench/lib/moatbench.py.
127.0.0.1:{port} inet n - n - 300 smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
        -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""".format(port=port)
    with open(os.path.join(d, "etc", "main.cf"), "w") as f:
        f.write(main)
    with open(os.path.join(d, "etc", "master.cf"), "w") as f:
        f.write(master)
    etc = os.path.join(d, "etc")
    subprocess.run(["postfix", "-c", etc, "set-permissions"],
                   capture_output=True, timeout=60)
    r = subprocess.run(["postfix", "-c", etc, "check"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        die("postfix check failed: %s" % (r.stderr or r.stdout))


def pf_start(d, port):
    etc = os.path.join(d, "etc")
    PF_DIRS.append(d)
    r = subprocess.run(["postfix", "-c", etc, "start"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        die("postfix start failed: %s" % (r.stderr or r.stdout))
    if not wait_port(port, None, 15):
        die("postfix did not listen on %d" % port)


def pf_master_pid(d):
    try:
        with open(os.path.join(d, "queue", "pid", "master.pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pf_stop(d):
    if d not in PF_DIRS:
        return
    PF_DIRS.remove(d)
    etc = os.path.join(d, "etc")
    pid = pf_master_pid(d)
    try:
        subprocess.run(["postfix", "-c", etc, "stop"],
                       capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pass
    # The master waits for its children; if it is still there, by PID.
    if pid is not None:
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pf_queue_count(d):
    n = 0
    for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _root, _dirs, files in os.walk(os.path.join(d, "queue", sub)):
            n += len(files)
    return n


# ------------------------------------------------------------------- moat

MOAT_CONF = """\
listen = ["127.0.0.1:{port}"];
hostname = "mx.example.test";
queue_dir = "{d}/queue";
data_dir = "{d}/data";
control_socket = "{d}/moat.sock";
log_level = "warn";
smtp {{ max_sessions = 20000; }}
limits {{ conn_per_ip = 0; conn_per_net = 0; conn_rate_per_ip = 0; msg_rate_per_ip = 0; rcpt_rate_per_ip = 0; byte_rate_per_ip = 0; }}
domain "example.test" {{ server = ["127.0.0.1:{sink}"]; }}
{extra}
"""


class Moat:
    """build/moatd in the foreground, in the background of the bench."""

    def __init__(self, moatd, d, port, sinkport, bound, extra=""):
        self.moatd = moatd
        self.d = d
        self.port = port
        os.makedirs(os.path.join(d, "queue"), exist_ok=True)
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        self.conf = os.path.join(d, "moat.conf")
        with open(self.conf, "w") as f:
            f.write(MOAT_CONF.format(port=port, d=d, sink=sinkport,
                                     extra=extra))
        self.logpath = os.path.join(d, "moatd.log")
        self.bound = bound
        self.proc = None
        self.logfh = None

    def validate(self):
        r = subprocess.run([self.moatd, "-c", self.conf, "-t"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            die("moatd -t refused the bench config %s: %s" %
                (self.conf, (r.stderr or r.stdout).strip()))

    def start(self):
        self.logfh = open(self.logpath, "ab")
        self.proc = spawn([self.moatd, "-c", self.conf], self.bound,
                          stdout=self.logfh, stderr=subprocess.STDOUT)
        if not wait_port(self.port, self.proc, 15):
            tail = ""
            try:
                with open(self.logpath, errors="replace") as f:
                    tail = f.read()[-2000:]
            except OSError:
                pass
            die("moatd did not accept on port %d; log:\n%s" %
                (self.port, tail))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            stop_proc(self.proc, grace=10)
        if self.logfh is not None:
            self.logfh.close()

    def queue_files(self):
        """Messages in moat's spool: queue/<bucket>/ and hold/, not
        tmp/ (being written) nor free/ (empty recycled files)."""
        n = 0
        spool = os.path.join(self.d, "queue")
        for sub in ("queue", "hold"):
            for _root, _dirs, files in os.walk(os.path.join(spool, sub)):
                n += len(files)
        return n


# ----------------------------------------------------------------- source

def smtp_source(port, sessions, msgs, size, limit, workdir, tag):
    """Send msgs messages of size bytes over `sessions` parallel
    sessions (-d: several messages per connection).  Returns
    (ok, accepted, seconds): accepted is smtp-source's own DATA
    counter (-c), seconds the wall time of the whole run.  Killed after
    `limit` seconds; then ok is False and accepted is what it had."""
    out = os.path.join(workdir, "source-%s.out" % tag)
    argv = ["timeout", "-k", "2", str(int(limit)),
            "smtp-source", "-c", "-d", "-s", str(sessions), "-m", str(msgs),
            "-l", str(size), "-f", "from@sender.test",
            "-t", "rcpt@example.test", "-M", "client.test",
            "127.0.0.1:%d" % port]
    with open(out, "wb") as fh:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)
        PROCS.append(p)
        try:
            rc = p.wait(timeout=limit + 10)
        except subprocess.TimeoutExpired:
            stop_proc(p)
            rc = -1
        secs = time.monotonic() - t0
        PROCS.remove(p)
    with open(out, "rb") as f:
        text = f.read().decode("ascii", "replace")
    nums = re.findall(r"(\d+)\r", text)
    accepted = int(nums[-1]) if nums else 0
    ok = rc == 0 and accepted == msgs
    if not ok:
        err = [l for l in text.replace("\r", "\n").splitlines()
               if l and not l.isdigit()]
        log("smtp-source rc=%s accepted=%d/%d %s" %
            (rc, accepted, msgs, " | ".join(err[-3:])))
    return ok, accepted, secs


def have_tools():
    for t in ("smtp-source", "smtp-sink", "postfix", "timeout"):
        if shutil.which(t) is None and not os.path.exists("/usr/sbin/" + t):
            die("%s not found (apt-get install postfix coreutils)" % t)
