#!/usr/bin/env bash
# Pyro5's own name server for pyrostore, on PYROSTORE_NS_HOST:PYROSTORE_NS_PORT
# (default 127.0.0.1:9090), broadcast off, in mutual TLS with the store's certificates
# (PYROSTORE_CERTS_DIR, default PYROSTORE_DATA_DIR/certs, default pyrostore-data/certs) set
# through Pyro5's own PYRO_SSL* variables; PYROSTORE_INSECURE=1 runs it plaintext.
# `pyrostore nameserver` is the same name server with the store's role checks and limits.
# Extra arguments go to the name server:
#   ./nameserver.sh            ./nameserver.sh --storage sql:ns.sqlite3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="python3"
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
case "${PYROSTORE_INSECURE:-0}" in
1|true|yes) echo "nameserver.sh: INSECURE: plaintext, no certificates" >&2 ;;
*)
    certs="${PYROSTORE_CERTS_DIR:-${PYROSTORE_DATA_DIR:-pyrostore-data}/certs}"
    for file in ca.crt node.crt node.key; do
        if [ ! -r "$certs/$file" ]; then
            echo "nameserver.sh: no $certs/$file: run \`pyrostore certs init\` and" \
                 "\`pyrostore certs node\` (or \`pyrostore up\` once), or set PYROSTORE_CERTS_DIR" >&2
            exit 2
        fi
    done
    export PYRO_SSL=1 PYRO_SSL_REQUIRECLIENTCERT=1 PYRO_SSL_CACERTS="$certs/ca.crt" \
        PYRO_SSL_SERVERCERT="$certs/node.crt" PYRO_SSL_SERVERKEY="$certs/node.key" \
        PYRO_SSL_CLIENTCERT="$certs/node.crt" PYRO_SSL_CLIENTKEY="$certs/node.key" ;;
esac
exec "$python" -m Pyro5.nameserver \
    --host "${PYROSTORE_NS_HOST:-127.0.0.1}" --port "${PYROSTORE_NS_PORT:-9090}" \
    --nobc "$@"
