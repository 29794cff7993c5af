#!/usr/bin/env bash
# README command 1: set up a fresh Debian 12 machine (as root) and run the main job:
# install aiosd into /opt/aiosd, start a single-node network and show it answering.
# mDNS stays off (the built-in default): nothing here multicasts on your network.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${AIOSD_PREFIX:-/opt/aiosd}
sock=/run/aiosd/aiosd.sock

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then echo "quickstart.sh: run as root (it installs packages and /opt/aiosd)" >&2; exit 2; fi

step "installing system packages"
need=()
for pkg in python3-venv podman runc debootstrap; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "installing aiosd into $prefix"
[ -x "$prefix/venv/bin/python" ] || python3 -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check "$repo"
ln -sf "$prefix/venv/bin/aiosd" /usr/local/bin/aiosd

step "starting the daemon (logs: /var/log/aiosd.log)"
if aiosd status >/dev/null 2>&1; then
  echo "a daemon is already running"
else
  nohup aiosd run >>/var/log/aiosd.log 2>&1 &
  for _ in $(seq 100); do aiosd status >/dev/null 2>&1 && break; sleep 0.1; done
fi

step "aiosd status"
aiosd status

step "building the base image for blocks (first run: a few minutes; cached after)"
aiosd image build-base

step "applying the echo example (component + block; the echo image is built on first use)"
# blockDir tells aiosd where the block's code is (docs/blocks.md): the podman driver builds the
# image localhost/aiosd-echo from it when missing; the process driver runs it directly.
blockfile=$(mktemp --suffix=.json)
"$prefix/venv/bin/python" - "$repo/examples/echo" >"$blockfile" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1] + "/block.json"))
doc["body"]["spec"]["values"].setdefault("blockInitData", {})["blockDir"] = sys.argv[1]
print(json.dumps(doc))
PY
aiosd apply -f "$repo/examples/echo/component.json" -f "$blockfile"
rm -f "$blockfile"

step "aiosd infer echo-1 --data '{\"message\": \"hello, aiosd\"}'"
aiosd infer echo-1 --data '{"message": "hello, aiosd"}'

step "what runs"
aiosd ps
echo
echo "Next: aiosd get blocks; aiosd mgmt echo-1 scale --data '{\"instances\": 2}'; aiosd delete block echo-1"
echo "The daemon runs in the background; stop it with: aiosd stop (block instances outlive it and are adopted by the next start)"
