"""A counting SMTP sink for bench/dr: the protected server that notes
every message's Message-Id, so the bench can count loss and duplicates.

What it does: listens on 127.0.0.1:PORT, answers any SMTP client
(EHLO with PIPELINING, HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) with
success, and for each message records its Message-Id header.  Every
0.2 s and at exit it writes a JSON stats file atomically:
  {"messages": n, "unique": u, "duplicates": n-u-noid, "noid": k,
   "first": t, "last": t}       (t: time.time() of the first/last "250")
and at exit, with --ids, every Message-Id with its count.

Why not smtp-sink: it counts messages but cannot tell a duplicate from
a distinct message.  Why not aiosmtpd: this is smaller and faster for a
sink that must keep up with a 500 msg/s paced drain on a shared CPU.

Bounds: command lines and message lines are limited to 1 MiB (asyncio
StreamReader limit); the whole process to --bound seconds.
Started and stopped (SIGTERM, by PID) by bench/lib/dr.py.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time

ST = {"messages": 0, "noid": 0, "first": None, "last": None}
IDS = {}


def write_stats(path):
    u = len(IDS)
    d = dict(ST)
    d["unique"] = u
    d["duplicates"] = ST["messages"] - ST["noid"] - u
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.replace(tmp, path)


async def session(reader, writer):
    w = writer.write
    w(b"220 sink.example.test ESMTP bench sink\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                w(b"250-sink.example.test\r\n250-PIPELINING\r\n"
                  b"250-8BITMIME\r\n250-SIZE 104857600\r\n"
                  b"250 ENHANCEDSTATUSCODES\r\n")
            elif cmd in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                w(b"250 2.0.0 Ok\r\n")
            elif cmd == b"DATA":
                w(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                mid = None
                inhdr = True
                while True:
                    dl = await reader.readline()
                    if not dl:
                        return
                    if dl in (b".\r\n", b".\n"):
                        break
                    if inhdr:
                        if dl in (b"\r\n", b"\n"):
                            inhdr = False
                        elif mid is None and \
                                dl[:11].lower() == b"message-id:":
                            mid = dl[11:].strip().decode("ascii",
                                                         "replace")
                now = time.time()
                ST["messages"] += 1
                if ST["first"] is None:
                    ST["first"] = now
                ST["last"] = now
                if mid is None:
                    ST["noid"] += 1
                else:
                    IDS[mid] = IDS.get(mid, 0) + 1
                w(b"250 2.0.0 Ok: queued\r\n")
            elif cmd == b"QUIT":
                w(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                w(b"502 5.5.2 Error: command not recognized\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main(a):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    srv = await asyncio.start_server(session, "127.0.0.1", a.port,
                                     limit=1 << 20, backlog=1024)
    end = time.monotonic() + a.bound
    async with srv:
        while not stop.is_set() and time.monotonic() < end:
            write_stats(a.stats)
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
    write_stats(a.stats)
    if a.ids:
        with open(a.ids, "w") as f:
            for k, v in IDS.items():
                f.write("%d %s\n" % (v, k))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--ids")
    ap.add_argument("--bound", type=float, default=600)
    args = ap.parse_args()
    asyncio.run(main(args))
    sys.exit(0)
