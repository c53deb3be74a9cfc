#!/usr/bin/env bash
# Pyro5's name server for pyrostore, on PYROSTORE_NS_HOST:PYROSTORE_NS_PORT
# (default 127.0.0.1:9090), broadcast off. Extra arguments go to the name server:
#   ./nameserver.sh            ./nameserver.sh --storage sql:ns.sqlite3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="python3"
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
exec "$python" -m Pyro5.nameserver \
    --host "${PYROSTORE_NS_HOST:-127.0.0.1}" --port "${PYROSTORE_NS_PORT:-9090}" \
    --nobc "$@"
