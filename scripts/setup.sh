#!/usr/bin/env bash
# Installs what the project and its tests need when it is missing: Deno 2.9.6 (the native binary,
# from npm), etcd (Debian's etcd-server and etcd-client) and, for the interop tests, Debian's Go
# toolchain with its gRPC, protobuf and etcd packages, Debian's Python grpcio/protobuf/h2 and Node
# with its own @grpc/grpc-js (clients we did not write, and HTTP/2 attackers, for the tests). Safe
# to run again; it changes nothing when all is there. Also Debian's chromium (the web tests' browser)
# and protoc (the Connect code's generator).
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo "$@"; else
      echo "setup: '$*' needs root (or sudo)" >&2; exit 1
    fi
  else "$@"; fi
}

deno_ok() {
  command -v deno >/dev/null 2>&1 || return 1
  # The npm wrapper (bin.cjs) runs deno under node and does not pass SIGTERM on: we need the real one.
  local real
  real=$(readlink -f "$(command -v deno)")
  head -c 4 "$real" | grep -q "ELF" || return 1
  deno --version | head -1 | grep -q '^deno 2\.'
}

if ! deno_ok; then
  echo "setup: installing deno@2.9.6 (npm install -g)"
  need_root npm install -g deno@2.9.6 >/dev/null
  hash -r
  deno_ok || { echo "setup: 'deno' on PATH is not the native Deno 2 binary ($(command -v deno))" >&2; exit 1; }
fi

# etcd for the service and the tests; Go with etcd's and gRPC's Go packages for the interop tests
# (a real grpc-go client through etcd's naming resolver, GOPATH mode, no module downloads);
# prometheus (and its promtool) for the metrics tests: a real scrape and an exposition check.
# nats-server (JetStream included) for the broker mode and its tests.
# Debian's python3 with grpcio and protobuf (C++ backend) is a foreign client (reflection), and
# python3-h2/hpack build the HTTP/2 attacks. chromium is the real browser of the web tests;
# protobuf-compiler (protoc) feeds `deno task proto` and the generated code's staleness test.
packages=(etcd-server etcd-client nats-server golang-go golang-google-grpc-dev golang-etcd-server-dev golang-google-protobuf-dev
  prometheus python3-grpcio python3-protobuf python3-h2 python3-hpack chromium protobuf-compiler)
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt-get)"
  need_root apt-get update -qq >/dev/null
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Node's own grpc-js (real Node clients that connect, call and close), outside the project tree.
node_grpc=${NODE_GRPC_DIR:-$HOME/.cache/notification-server/node-grpc}
if [ ! -f "$node_grpc/node_modules/@grpc/grpc-js/package.json" ]; then
  echo "setup: installing @grpc/grpc-js@1.14.7 for node into $node_grpc (npm)"
  mkdir -p "$node_grpc"
  (cd "$node_grpc" && { [ -f package.json ] || echo '{"private":true}' >package.json; } &&
    npm install --no-audit --no-fund --silent @grpc/grpc-js@1.14.7 >/dev/null)
fi

# Debian's packages start a system etcd on :2379 and nats-server on :4222; we start our own where
# we need one (the tests on free ports).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  echo "setup: note: a system etcd service is running on this machine (systemctl status etcd)"
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nats-server 2>/dev/null; then
  echo "setup: note: a system nats-server is running on this machine (without JetStream unless configured)"
fi

echo "setup: $(deno --version | head -1), $(etcd --version | head -1), nats-server $(nats-server --version | sed 's/.*v//'), $(go version)"
