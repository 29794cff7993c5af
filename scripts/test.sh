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
# Tests marked `long` (chaos version skew, pinned findings) stay out of the default run; a later `-m` wins:
# ./scripts/test.sh -m long runs them.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -m "not long" "$@"
