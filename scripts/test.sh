#!/usr/bin/env bash
# README command 2: install everything the tests need on a fresh Debian 12 machine (as root),
# then run the whole suite. .ci/run calls exactly this. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in python3-venv podman runc debootstrap busybox-static iproute2 tmux systemd util-linux nftables faketime chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# Tests marked `long` (chaos version skew, pinned findings) stay out of the default
# run; a later `-m` wins: ./scripts/test.sh -m long runs them.
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider -m "not long")
if [ $# -gt 0 ]; then
  exec "${PYTEST[@]}" "$@"  # a selection: one pytest, as asked
fi

# The whole suite, as two pytest processes side by side: the daemon tests (chaos, e2e, integration:
# real processes that mostly wait on each other) in front, and the pure tests (unit, sim: CPU only)
# beside them at nice 10, so they use the CPU the daemon tests leave idle instead of adding their
# own minutes (docs/performance.md "Test suite"). Each gets its own temporary directory.
base=$(mktemp -d /tmp/aiosd-tests.XXXXXX)
pure_dirs=(tests/unit tests/sim)
daemon_dirs=()
for d in tests/*/; do
  d=${d%/}
  case " ${pure_dirs[*]} " in *" $d "*) ;; *) daemon_dirs+=("$d") ;; esac
done
AIOSD_TEST_SLOW_CALLBACK_S=2.0 nice -n 10 "${PYTEST[@]}" --basetemp="$base/pure" "${pure_dirs[@]}" \
  >"$base/pure.log" 2>&1 &
pure=$!
trap 'kill "$pure" 2>/dev/null || true' EXIT
set +e
"${PYTEST[@]}" --basetemp="$base/daemons" "${daemon_dirs[@]}"
rc_daemons=$?
wait "$pure"
rc_pure=$?
set -e
trap - EXIT
echo
echo "=== ${pure_dirs[*]} (run beside the daemon tests at nice 10) ==="
if [ "$rc_pure" -eq 0 ]; then tail -n 2 "$base/pure.log"; else cat "$base/pure.log"; fi
echo "=== ${daemon_dirs[*]}: exit $rc_daemons; ${pure_dirs[*]}: exit $rc_pure ==="
[ "$rc_daemons" -eq 0 ] && [ "$rc_pure" -eq 0 ] && rm -rf "$base"
[ "$rc_daemons" -eq 0 ] && [ "$rc_pure" -eq 0 ]
