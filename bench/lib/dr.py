"""bench/dr: the disaster-recovery figure.

What it does, against one gateway (moat by default; `--gateway postfix`
runs the same script against the private Postfix, for comparison and to
test the bench itself):
  1. normal: the protected server (bench/lib/sink.py, which records
     Message-Ids) is up; smtp-source sends --normal messages of 1 KiB
     over 10 sessions; accepted msg/s = messages / wall time.  Then the
     bench waits (bounded) until the sink has them all.
  2. outage: the sink is stopped (connections refused); smtp-source
     sends --queued messages the same way; accepted msg/s, and its
     percentage of the normal rate (target >= 80%).
  3. drain: a fresh sink starts; the bench times until every message
     accepted in phase 2 arrived (bounded by --drain-max): time to
     first delivery (outage detection/probe), time to drain, achieved
     rate from first to last delivery vs. the configured
     `delivery { delivery_rate = R; }`, loss (accepted in phase 2 but
     never seen) and duplicates (Message-Id seen more than once).
smtp-source gives every message of one run a distinct Message-Id
(<pid.fd.count@client.test>), so phases are told apart by its pid.

Output: Markdown to stdout and bench/out/dr-<UTC date>.md.
Invariants: see moatbench.py (loopback only, free ports, every process
stopped by PID, everything bounded in count and time).
"""

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moatbench as mb  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Postfix's retry knobs for the comparison run: without them it would
# retry the deferred queue only every 5 minutes (queue_run_delay 300s).
PF_DR_MAIN = """\
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
"""


def parse_args():
    ap = argparse.ArgumentParser(prog="bench/dr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", choices=("moat", "postfix"), default="moat")
    ap.add_argument("--normal", type=int, default=5000,
                    help="messages in the normal phase (default 5000)")
    ap.add_argument("--queued", type=int, default=10000,
                    help="messages queued during the outage (default 10000)")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rate", type=int, default=500,
                    help="moat's delivery_rate, msg/s (default 500)")
    ap.add_argument("--drain-max", type=float, default=100.0,
                    help="max seconds to wait for the drain (default 100)")
    ap.add_argument("--moatd", default=os.path.join(ROOT, "build", "moatd"))
    ap.add_argument("--moat-extra", default="",
                    help="extra lines appended to moat's config")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    return ap.parse_args()


class Sink:
    """bench/lib/sink.py as a process we own."""

    def __init__(self, workdir, name, port, bound):
        self.stats = os.path.join(workdir, "sink-%s.json" % name)
        self.ids = os.path.join(workdir, "sink-%s.ids" % name)
        self.started = time.time()
        self.proc = mb.spawn(["/usr/bin/python3",
                              os.path.join(HERE, "sink.py"),
                              "--port", str(port), "--stats", self.stats,
                              "--ids", self.ids, "--bound", str(bound)],
                             bound + 30)
        if not mb.wait_port(port, self.proc, 10):
            mb.die("sink.py did not start on port %d" % port)

    def read(self):
        try:
            with open(self.stats) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {"messages": 0, "unique": 0, "duplicates": 0,
                    "noid": 0, "first": None, "last": None}

    def stop(self):
        mb.stop_proc(self.proc, grace=10)
        return self.read()

    def id_counts(self):
        """{message-id: times seen}, after stop()."""
        out = {}
        try:
            with open(self.ids) as f:
                for line in f:
                    n, mid = line.rstrip("\n").split(" ", 1)
                    out[mid] = int(n)
        except OSError:
            pass
        return out


def wait_sink(sink, want, limit, gw_alive):
    """Poll until the sink has `want` unique messages or limit seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        st = sink.read()
        if st["unique"] >= want:
            return True
        if not gw_alive():
            mb.log("gateway died while draining")
            return False
        time.sleep(0.2)
    return False


def pid_of(mid):
    m = re.match(r"<([0-9a-f]+)\.", mid)
    return m.group(1) if m else None


def main():
    a = parse_args()
    mb.have_tools()
    mb.install_cleanup()
    mb.KEEP = a.keep
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if a.gateway == "moat" and not os.access(a.moatd, os.X_OK):
        mb.die("moatd not found at %s (run `make` at the repository root);"
               " `bench/dr --gateway postfix` tests the bench on Postfix"
               % a.moatd)

    workdir = mb.make_workdir(a.dir)
    mb.log("workdir %s (%s)" % (workdir, mb.fs_type(workdir)))
    bound = int(a.drain_max + 600)
    gport, sport = mb.pick_ports(2)
    if a.gateway == "moat":
        extra = "delivery { delivery_rate = %d; }\n%s" % (a.rate,
                                                          a.moat_extra)
        gw = mb.Moat(a.moatd, os.path.join(workdir, "moat"), gport, sport,
                     bound, extra)
        gw.validate()
        gw.start()
        alive = gw.alive
        setting = "moat, delivery_rate = %d msg/s" % a.rate
    else:
        pd = os.path.join(workdir, "postfix")
        mb.pf_setup(pd, gport, sport, PF_DR_MAIN)
        mb.pf_start(pd, gport)
        alive = lambda: mb.pf_master_pid(pd) is not None  # noqa: E731
        setting = ("postfix, no pacing; queue_run_delay 5s, backoff 5-10s "
                   "(defaults would wait up to 300s)")
    mb.log("%s on 127.0.0.1:%d, protected server 127.0.0.1:%d" %
           (a.gateway, gport, sport))
    limit = 120.0
    load0 = os.getloadavg()[0]

    # 1. normal
    sink = Sink(workdir, "normal", sport, bound)
    ok1, acc1, secs1 = mb.smtp_source(gport, a.sessions, a.normal, a.size,
                                      limit, workdir, "normal")
    r_normal = acc1 / secs1
    mb.log("normal: %d accepted in %.2fs = %.0f msg/s" %
           (acc1, secs1, r_normal))
    t0 = time.monotonic()
    drained1 = wait_sink(sink, acc1, a.drain_max, alive)
    mb.log("normal: sink has them after %.1fs%s" %
           (time.monotonic() - t0, "" if drained1 else " (NOT ALL)"))
    st1 = sink.stop()

    # 2. outage
    time.sleep(1.0)
    ok2, acc2, secs2 = mb.smtp_source(gport, a.sessions, a.queued, a.size,
                                      limit, workdir, "outage")
    r_down = acc2 / secs2
    mb.log("outage: %d accepted in %.2fs = %.0f msg/s (%.0f%% of normal)" %
           (acc2, secs2, r_down, 100.0 * r_down / r_normal))
    queued_info = ""
    if a.gateway == "moat":
        queued_info = "%d files under moat's queue_dir" % gw.queue_files()
    else:
        queued_info = "%d messages in Postfix's queue" % mb.pf_queue_count(pd)
    mb.log("outage: " + queued_info)

    # 3. drain
    sink2 = Sink(workdir, "drain", sport, bound)
    t_up = sink2.started
    drained2 = wait_sink(sink2, acc2, a.drain_max, alive)
    # a little longer, to catch late duplicates
    time.sleep(2.0)
    st2 = sink2.stop()
    ids1 = sink.id_counts()
    ids2 = sink2.id_counts()
    src_pids = set(pid_of(m) for m in ids1)
    outage_ids = {m: n for m, n in ids2.items() if pid_of(m) not in src_pids}
    normal_again = {m: n for m, n in ids2.items() if pid_of(m) in src_pids}
    got2 = len(outage_ids)
    lost2 = acc2 - got2
    dups = (sum(n - 1 for n in ids1.values()) +
            sum(n - 1 for n in ids2.values()) +
            len(set(normal_again) & set(ids1)))
    lost1 = acc1 - len(ids1) - len(set(normal_again) - set(ids1))

    first, last = st2["first"], st2["last"]
    if first is not None and last is not None and got2 > 0:
        to_first = first - t_up
        to_drain = last - t_up
        span = last - first
        ach = (st2["messages"] - 1) / span if span > 0 else float("inf")
    else:
        to_first = to_drain = span = ach = None

    now = datetime.datetime.now(datetime.timezone.utc)
    L = []
    L.append("# Disaster recovery: %s" % a.gateway)
    L.append("")
    L.append("%s UTC, %s, %d CPUs, queue fs %s; %s; %d sessions, %d-byte "
             "messages; load average %.1f at start, %.1f at end." %
             (now.strftime("%Y-%m-%d %H:%M"), platform.node(),
              os.cpu_count() or 0, mb.fs_type(workdir), setting,
              a.sessions, a.size, load0, os.getloadavg()[0]))
    L.append("")
    L.append("| figure | value | target |")
    L.append("| --- | ---: | --- |")
    L.append("| accepted msg/s, protected server up | %.0f | |" % r_normal)
    L.append("| accepted msg/s, protected server down | %.0f | |" % r_down)
    pct = 100.0 * r_down / r_normal if r_normal > 0 else 0
    L.append("| down / up | %.0f%% | >= 80%% %s |" %
             (pct, "ok" if pct >= 80 else "**MISSED**"))
    L.append("| queued during the outage | %d of %d%s | all |" %
             (acc2, a.queued, "" if ok2 else " (smtp-source failed)"))
    if to_first is None:
        L.append("| drain | nothing arrived in %.0fs | |" % a.drain_max)
    else:
        L.append("| server up -> first delivery | %.1f s | |" % to_first)
        L.append("| server up -> all delivered | %s | |" %
                 ("%.1f s" % to_drain if drained2 else
                  "not within %.0f s" % a.drain_max))
        L.append("| drain rate, first to last delivery | %.0f msg/s | "
                 "%s |" % (ach, ("%d msg/s (%.0f%%)" %
                                  (a.rate, 100.0 * ach / a.rate))
                           if a.gateway == "moat" else "-"))
    L.append("| received after the outage | %d (unique, of %d) | all |" %
             (got2, acc2))
    L.append("| lost (accepted, never delivered) | %d outage, %d normal | "
             "0 %s |" % (lost2, lost1,
                         "ok" if lost1 == 0 and lost2 == 0 else "**LOSS**"))
    L.append("| duplicates (same Message-Id again) | %d | rare |" % dups)
    L.append("")
    L.append("Normal phase: %d accepted in %.2fs, sink had %d unique%s. "
             "Outage: %d accepted in %.2fs; %s. Sink stats: normal %s; "
             "drain %s." %
             (acc1, secs1, len(ids1), "" if drained1 else " (not all)",
              acc2, secs2, queued_info, json.dumps(st1), json.dumps(st2)))
    text = "\n".join(L) + "\n"
    sys.stdout.write(text)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "dr-%s-%s.md" %
                        (a.gateway, now.strftime("%Y-%m-%dT%H%M%SZ")))
    with open(path, "w") as f:
        f.write(text)
    mb.log("results written to %s" % path)
    mb.cleanup()


if __name__ == "__main__":
    main()
