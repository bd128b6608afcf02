#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run
# moatd in the foreground on the example configuration (etc/moat.conf:
# listens on 127.0.0.1:2525, protects example.test, relays to
# 127.0.0.1:2526, queue and data under ./var/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
make -j"$(nproc)" >/dev/null
cat <<'MSG'
moatd is starting on 127.0.0.1:2525 (Ctrl-C stops it).
In another terminal, play the protected server and send a test message:
  smtp-sink -c -u nobody 127.0.0.1:2526 100 &   # or any SMTP server
  swaks --server 127.0.0.1:2525 --to user@example.test --from you@sender.test
  build/moatctl -s var/moat.sock queue list
MSG
exec build/moatd -c etc/moat.conf
