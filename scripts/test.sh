#!/usr/bin/env bash
# The README's second command, and what CI runs: install what is missing,
# build (normal and ASan+UBSan), run the unit tests, the end-to-end tests
# on both builds, the fuzzers for a bounded time, and the docs check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
PY=/usr/bin/python3

echo "== build"
make -j"$JOBS" all
make -j"$JOBS" SANITIZE=1 all
make check-docs

echo "== unit tests"
make -j"$JOBS" unit
make -j"$JOBS" SANITIZE=1 unit

echo "== fuzzers (${FUZZ_SECONDS}s each)"
make -j"$JOBS" fuzz
for f in build-fuzz/fuzz_*; do
	name=$(basename "$f")
	work=$(mktemp -d)
	cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null || true
	dict=()
	if [ -f "fuzz/$name.dict" ]; then
		dict=(-dict="fuzz/$name.dict")
	elif [ "${name#fuzz_smtp_}" != "$name" ]; then
		dict=(-dict=fuzz/smtp.dict)
	fi
	"$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 \
	    -print_final_stats=1 "${dict[@]}" "$work" 2>"$work.log" || {
		tail -40 "$work.log"; echo "fuzzer $name failed"; exit 1; }
	echo "$name: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work.log" | grep -Eo '[0-9]+$' || echo '?') runs in ${FUZZ_SECONDS}s, no crash"
	rm -rf "$work" "$work.log"
done

echo "== end-to-end tests (ASan+UBSan build)"
MOAT_BUILD=build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	$PY -m pytest -q -x -p no:cacheprovider tests/e2e
echo "== end-to-end tests (release build)"
MOAT_BUILD=build $PY -m pytest -q -p no:cacheprovider tests/e2e
