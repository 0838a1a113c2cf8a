#!/usr/bin/env bash
# Run the whole test suite: installs what it needs on a fresh machine (Debian's redis-server,
# rabbitmq-server, chromium and docker-compose when missing, the venv with requirements-dev.txt),
# starts RabbitMQ when it is installed but not running, then lints (ruff, the import-linter layer
# contracts) and runs pytest. Arguments go to pytest.
set -euo pipefail
missing=()
command -v redis-server > /dev/null || missing+=(redis-server)
command -v rabbitmq-server > /dev/null || missing+=(rabbitmq-server)  # unittests/ops/brokers/test_rabbitmq.py
command -v chromium > /dev/null || missing+=(chromium)
command -v docker-compose > /dev/null || missing+=(docker-compose)
command -v jq > /dev/null || missing+=(jq)  # unittests/management/test_celery_status_command.py runs a jq monitoring script
command -v promtool > /dev/null || missing+=(prometheus)  # promtool checks the /metrics exposition
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
  else
    echo "Missing: ${missing[*]} (install them, or run as root on Debian)" >&2
  fi
fi
# The RabbitMQ tests use this machine's RabbitMQ on 127.0.0.1:5672: start it when it is installed but not answering.
if command -v rabbitmq-server > /dev/null && ! (exec 3<> /dev/tcp/127.0.0.1/5672) 2> /dev/null; then
  rabbitmq-server -detached && timeout 60 rabbitmqctl await_startup \
    || echo "RabbitMQ did not start; its tests skip (or fail when CI=true)" >&2
fi
. "$(dirname "$0")/bootstrap.sh" requirements-dev.txt
ruff check .
ruff format --check .
lint-imports  # the layer contracts of pyproject.toml [tool.importlinter]
python -m pytest "$@"
