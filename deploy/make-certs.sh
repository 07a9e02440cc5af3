#!/usr/bin/env bash
# Makes a small private CA, a server certificate for virtgated and client
# certificates for mTLS, with openssl (Debian's `openssl` package). The
# README's "Security" section shows these commands; the TLS tests run this
# script, so they work as written.
#
#   deploy/make-certs.sh DIR [SERVER_NAME...] [-- CLIENT_ROLE...]
#
# DIR/ca.{crt,key}             the CA (keep ca.key offline in production)
# DIR/server.{crt,key}         virtgated's: --tls_cert, --tls_key; its names
#                              are localhost, 127.0.0.1 and SERVER_NAMEs
# DIR/ROLE.{crt,key}           a client's: virtgatectl --tls_cert/--tls_key;
#                              identity (URI SAN) spiffe://virtgate/ROLE.
#                              Default roles: orchestrator operator monitoring
# Keys are EC P-256, certificates valid 365 days. An existing CA in DIR is
# reused, so running it again issues new certificates from the same CA.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 DIR [SERVER_NAME...] [-- CLIENT_ROLE...]" >&2
  exit 2
fi
dir="$1"
shift
names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
roles=("$@")
[ ${#roles[@]} -eq 0 ] && roles=(orchestrator operator monitoring)
mkdir -p "$dir"
cd "$dir"
umask 077  # keys readable by their owner only

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.crt -days 365 -subj "/CN=virtgate CA $(hostname)-$$" 2>/dev/null
fi

# issue NAME SUBJECT SAN EXTENDED_KEY_USAGE
issue() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$1.crt" -days 365 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

san="DNS:localhost,IP:127.0.0.1"
for n in "${names[@]}"; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
done
issue server "/CN=virtgated" "$san" serverAuth
for role in "${roles[@]}"; do
  issue "$role" "/CN=$role" "URI:spiffe://virtgate/$role" clientAuth
done
chmod 644 ./*.crt
echo "make-certs: in $(pwd): ca.crt, server.crt/.key, ${roles[*]/%/.crt/.key}"
