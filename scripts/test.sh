#!/usr/bin/env bash
# The README's test command: installs system packages when missing (apt), a venv
# with the project and its test extras, then runs lint, types, import contracts
# and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v turnserver >/dev/null 2>&1 || need+=(coturn)  # TURN relay tests (tests/integration/test_turn_relay.py)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)  # joins the Redis Cluster the store tests start
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v caddy >/dev/null 2>&1 || need+=(caddy)  # deploy/Caddyfile is adapted by the real caddy (tests/integration/test_deploy_topology.py)
command -v curl >/dev/null 2>&1 || need+=(curl)  # the README's curl example is run as a test
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the topology test makes a throw-away certificate for Caddy (tests/e2e/test_topology.py)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
# The media node's C send loop (media/_fastpath.c, an optional extension that pip builds): a C compiler and
# Python's headers; tests/unit/test_fastpath.py expects it built wherever a compiler is.
command -v gcc >/dev/null 2>&1 || command -v cc >/dev/null 2>&1 || need+=(gcc)
"${PYTHON:-python3}" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Upgrading pip is best effort (an old pip still installs the project); the project install is not.
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || echo "pip upgrade failed; going on with the venv's pip"
if ! .venv/bin/python -m pip install -q -e ".[test]" >.venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2
  echo "pip install of the project and its test extras failed" >&2
  exit 1
fi
.venv/bin/python -c "import courtlink, rooms, signaling, media, recorder"

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy rooms protocol signaling media recorder courtlink tests bench
echo "== import contracts"; .venv/bin/lint-imports
echo "== pytest"; .venv/bin/pytest -q -p no:cacheprovider --durations=25 "$@"
