"""bench/run: accepted messages per second, moat vs. Postfix.

What it does: sets up moat (build/moatd) and a private Postfix as the
same relay gateway on loopback, each relaying to its own smtp-sink (the
protected server), and drives each with smtp-source: 1 KiB and 64 KiB
messages at 1, 10 and 50 parallel sessions.  Runs are interleaved per
cell (moat, Postfix, moat, Postfix, ... for --rounds rounds) so that
drift of the shared machine hits both alike.  Prints a Markdown table
(median msg/s per gateway, median of the per-round ratios, spread) to
stdout and writes it to bench/out/results-<UTC date>.md.

"Accepted" = messages smtp-source completed (250 after DATA, which both
gateways send only after fsync) / wall time of the whole run of N.  N is
chosen per gateway and cell from a short pilot run so that each
measured run lasts about --target seconds; every run is bounded in
count (N <= --max-msgs) and in time (timeout).  Between runs the bench
waits (bounded) until the sink has everything, so that no run starts
while the previous one's relaying still loads the CPU; the sink counts
are reported at the end.

Invariants: see moatbench.py (loopback only, free ports, every process
stopped by PID).
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moatbench as mb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def parse_args():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds per cell (default 2, min 1)")
    ap.add_argument("--sizes", default="1024,65536",
                    help="message sizes in bytes (default 1024,65536)")
    ap.add_argument("--sessions", default="1,10,50",
                    help="parallel sessions (default 1,10,50)")
    ap.add_argument("--target", type=float, default=6.0,
                    help="seconds each measured run should last (default 6)")
    ap.add_argument("--max-msgs", type=int, default=60000,
                    help="upper bound on N per run (default 60000)")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="max seconds to wait for the sink between runs")
    ap.add_argument("--only", choices=("both", "moat", "postfix"),
                    default="both")
    ap.add_argument("--order", choices=("ab", "abba"), default="ab",
                    help="ab: moat first every round; abba: alternate")
    ap.add_argument("--moatd", default=os.path.join(ROOT, "build", "moatd"))
    ap.add_argument("--moat-extra", default="",
                    help="extra lines appended to moat's bench config")
    ap.add_argument("--dir", default=None,
                    help="parent of the temp dir (queues live there; "
                         "default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (logs, configs) afterwards")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    a = ap.parse_args()
    a.sizes = [int(x) for x in a.sizes.split(",") if x]
    a.sessions = [int(x) for x in a.sessions.split(",") if x]
    a.rounds = max(1, a.rounds)
    return a


def size_label(n):
    if n % 1024 == 0:
        return "%d KiB" % (n // 1024)
    return "%d B" % n


class Gateway:
    def __init__(self, name, port, sink):
        self.name = name
        self.port = port
        self.sink = sink
        self.sent = 0           # accepted by the gateway, all runs
        self.stop = None
        self.alive = lambda: True


def settle(gw, limit, stall=5.0):
    """Wait until gw's sink has all gw accepted, at most limit seconds
    and at most `stall` seconds without progress (a gateway that does
    not relay, or backs off, must not stretch the bench).  Returns
    seconds waited, or -1 when it gave up."""
    t0 = time.monotonic()
    last, last_t = -1, t0
    while True:
        n = gw.sink.count()
        now = time.monotonic()
        if n >= gw.sent:
            return now - t0
        if n != last:
            last, last_t = n, now
        if now - t0 > limit or now - last_t > stall:
            mb.log("%s: sink has %d of %d after %.0fs; going on" %
                   (gw.name, n, gw.sent, now - t0))
            return -1
        time.sleep(0.1)


def one_run(gw, a, workdir, size, sess, n, tag):
    limit = max(30.0, a.target * 5)
    ok, acc, secs = mb.smtp_source(gw.port, sess, n, size, limit,
                                   workdir, tag)
    gw.sent += acc
    rate = acc / secs if secs > 0 else 0.0
    return ok, acc, secs, rate


def fmt_rate(v):
    return "n/a" if v is None else "%.0f" % v


def spread_pct(vals):
    """Half the range as a percentage of the median: the +-x% column."""
    if len(vals) < 2:
        return None
    med = statistics.median(vals)
    if med <= 0:
        return None
    return 50.0 * (max(vals) - min(vals)) / med


def main():
    a = parse_args()
    mb.have_tools()
    mb.install_cleanup()
    mb.KEEP = a.keep
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"

    want_moat = a.only in ("both", "moat")
    want_pf = a.only in ("both", "postfix")
    moat_note = ""
    if want_moat and not os.access(a.moatd, os.X_OK):
        moat_note = ("moatd not found at %s (run `make` at the repository "
                     "root): measuring Postfix only" % a.moatd)
        mb.log("WARNING: " + moat_note)
        want_moat = False
    if not want_moat and not want_pf:
        mb.die("nothing to measure")

    workdir = mb.make_workdir(a.dir)
    mb.log("workdir %s (%s)" % (workdir, mb.fs_type(workdir)))
    ncells = len(a.sizes) * len(a.sessions)
    bound = int(ncells * a.rounds * 2 * (a.target * 5 + a.settle + 30)
                + 600)
    p_moat, p_moat_sink, p_pf, p_pf_sink = mb.pick_ports(4)

    gws = []
    if want_moat:
        gw = Gateway("moat", p_moat,
                     mb.SmtpSink(workdir, "moat", p_moat_sink, bound))
        md = os.path.join(workdir, "moat")
        m = mb.Moat(a.moatd, md, p_moat, p_moat_sink, bound, a.moat_extra)
        m.validate()
        m.start()
        gw.stop, gw.alive, gw.obj = m.stop, m.alive, m
        gws.append(gw)
        mb.log("moatd pid %d on 127.0.0.1:%d -> sink %d" %
               (m.proc.pid, p_moat, p_moat_sink))
    if want_pf:
        gw = Gateway("postfix", p_pf,
                     mb.SmtpSink(workdir, "postfix", p_pf_sink, bound))
        pd = os.path.join(workdir, "postfix")
        mb.pf_setup(pd, p_pf, p_pf_sink)
        mb.pf_start(pd, p_pf)
        gw.stop = lambda d=pd: mb.pf_stop(d)
        gw.obj = pd
        gws.append(gw)
        mb.log("postfix (master pid %s) on 127.0.0.1:%d -> sink %d" %
               (mb.pf_master_pid(pd), p_pf, p_pf_sink))

    load0 = os.getloadavg()[0]
    cells = [(s, n) for s in a.sizes for n in a.sessions]
    # Pilot: a short unmeasured run per gateway and cell, to size N so
    # that each measured run lasts about a.target seconds.
    nmsgs = {}
    for size, sess in cells:
        for gw in gws:
            # Two steps: a tiny run, then one sized for about a second
            # (a tiny run underestimates: connection set-up dominates),
            # the rate of the last sizes N.
            # A third step when the second was still shorter than a
            # second (a cold or disturbed first step underestimated).
            pilot = max(50, sess * 10)
            for step in (1, 2, 3):
                ok, acc, secs, rate = one_run(
                    gw, a, workdir, size, sess, pilot,
                    "pilot%d-%s-%d-%d" % (step, gw.name, size, sess))
                settle(gw, a.settle)
                if not ok or (step >= 2 and secs >= 1.0):
                    break
                pilot = min(a.max_msgs,
                            max(pilot, sess * 20, int(rate * 1.5)))
            n = int(rate * a.target) if ok else pilot
            n = max(sess * 5, min(a.max_msgs, n))
            nmsgs[(gw.name, size, sess)] = n
            mb.log("pilot %-7s %6s x%-3d %7.0f msg/s -> N=%d" %
                   (gw.name, size_label(size), sess, rate, n))

    results = {}    # (gw, size, sess) -> list of (rate, ok, n, secs)
    for r in range(a.rounds):
        order = list(gws)
        if a.order == "abba" and r % 2 == 1:
            order.reverse()
        for size, sess in cells:
            for gw in order:
                if not gw.alive():
                    mb.die("%s died (see %s)" % (gw.name, workdir))
                n = nmsgs[(gw.name, size, sess)]
                ok, acc, secs, rate = one_run(
                    gw, a, workdir, size, sess, n,
                    "r%d-%s-%d-%d" % (r, gw.name, size, sess))
                waited = settle(gw, a.settle)
                results.setdefault((gw.name, size, sess), []).append(
                    (rate, ok, n, secs))
                mb.log("round %d %-7s %6s x%-3d N=%-6d %6.2fs %7.0f msg/s%s"
                       " (sink settle %s)" %
                       (r + 1, gw.name, size_label(size), sess, n, secs,
                        rate, "" if ok else " INCOMPLETE",
                        "%.1fs" % waited if waited >= 0 else "timeout"))

    # Final drain, bounded, for the sink counts.
    for gw in gws:
        settle(gw, a.settle)
    sinkinfo = []
    for gw in gws:
        got = gw.sink.count()
        if gw.name == "postfix":
            left = ", %d left in its queue" % mb.pf_queue_count(gw.obj)
        else:
            left = ", %d files left under its queue_dir" % \
                gw.obj.queue_files()
        sinkinfo.append("%s: accepted %d, sink received %d%s" %
                        (gw.name, gw.sent, got, left))

    # ------------------------------------------------------------ report
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = []
    lines.append("# moat vs. Postfix: accepted messages per second")
    lines.append("")
    lines.append("%s UTC, %s, %d CPUs, queue fs %s, %d interleaved "
                 "round(s) (order %s), ~%.0fs per run; load average "
                 "%.1f at start, %.1f at end (other work on the machine "
                 "shows here)." %
                 (now.strftime("%Y-%m-%d %H:%M"), platform.node(),
                  os.cpu_count() or 0, mb.fs_type(workdir), a.rounds,
                  a.order, a.target, load0, os.getloadavg()[0]))
    if moat_note:
        lines.append("")
        lines.append("**%s**" % moat_note)
    lines.append("")
    lines.append("| size | sessions | moat msg/s | postfix msg/s | ratio | "
                 "spread |")
    lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
    incomplete = False
    for size, sess in cells:
        med, sp = {}, {}
        for name in ("moat", "postfix"):
            runs = results.get((name, size, sess))
            if runs:
                rates = [x[0] for x in runs]
                med[name] = statistics.median(rates)
                sp[name] = spread_pct(rates)
                incomplete |= not all(x[1] for x in runs)
            else:
                med[name] = None
                sp[name] = None
        ratio_s = "n/a"
        rr = []
        if med["moat"] is not None and med["postfix"] is not None:
            mr = [x[0] for x in results[("moat", size, sess)]]
            pr = [x[0] for x in results[("postfix", size, sess)]]
            rr = [m / p for m, p in zip(mr, pr) if p > 0]
            if rr:
                ratio_s = "%.2f" % statistics.median(rr)
        parts = []
        if rr:
            parts.append("ratio %.2f-%.2f" % (min(rr), max(rr)))
        for name in ("moat", "postfix"):
            if sp[name] is not None:
                parts.append("%s ±%.0f%%" % (name, sp[name]))
        lines.append("| %s | %d | %s | %s | %s | %s |" %
                     (size_label(size), sess, fmt_rate(med["moat"]),
                      fmt_rate(med["postfix"]), ratio_s,
                      ", ".join(parts) or "-"))
    lines.append("")
    lines.append("msg/s: median over rounds of (messages accepted / wall "
                 "time of the smtp-source run). ratio: median of the "
                 "per-round moat/postfix ratios; spread: their min-max, and "
                 "each gateway's half-range as ± % of its median.")
    if incomplete:
        lines.append("")
        lines.append("**Some runs were incomplete (smtp-source error or "
                     "timeout); their rate counts only accepted messages.**")
    lines.append("")
    lines.append("Sink (protected server) counts at the end, after up to "
                 "%.0fs of drain: %s." % (a.settle, "; ".join(sinkinfo)))
    lines.append("")
    lines.append("<details><summary>all runs</summary>")
    lines.append("")
    lines.append("| gateway | size | sessions | round | N | seconds | msg/s "
                 "| complete |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for size, sess in cells:
        for gw in gws:
            for i, (rate, ok, n, secs) in enumerate(
                    results[(gw.name, size, sess)]):
                lines.append("| %s | %s | %d | %d | %d | %.2f | %.0f | %s |"
                             % (gw.name, size_label(size), sess, i + 1, n,
                                secs, rate, "yes" if ok else "NO"))
    lines.append("")
    lines.append("</details>")
    text = "\n".join(lines) + "\n"

    sys.stdout.write(text)
    sys.stdout.flush()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "results-%s.md" %
                        now.strftime("%Y-%m-%dT%H%M%SZ"))
    with open(path, "w") as f:
        f.write(text)
    mb.log("results written to %s" % path)

    mb.cleanup()


if __name__ == "__main__":
    main()
