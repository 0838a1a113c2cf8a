#!/usr/bin/env bash
# Run the whole test suite: installs what it needs on a fresh machine (Debian's redis-server,
# chromium and docker-compose when missing, the venv with requirements-dev.txt), then lints
# and runs pytest. Arguments go to pytest.
set -euo pipefail
missing=()
command -v redis-server > /dev/null || missing+=(redis-server)
command -v chromium > /dev/null || missing+=(chromium)
command -v docker-compose > /dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
  else
    echo "Missing: ${missing[*]} (install them, or run as root on Debian)" >&2
  fi
fi
. "$(dirname "$0")/bootstrap.sh" requirements-dev.txt
ruff check .
ruff format --check .
python -m pytest "$@"
