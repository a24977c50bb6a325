#!/bin/sh
# deps.sh - install every Debian and npm package the project needs.
# Idempotent and quiet when everything is already present. Run as root on
# Debian 12 (or with sudo available).
set -eu
cd "$(dirname "$0")/.."

# Build and runtime: compiler, libzmq, OpenCL ICD loader + headers, PoCL
# (the CPU OpenCL device used in CI), jansson, libuuid, PCRE2,
# libmicrohttpd, OpenSSL's libcrypto (SHA-256), clang (libFuzzer); strace,
# gdb and perf for the operations tests (attaching to a serving stage).
PKGS="build-essential pkg-config clang libzmq3-dev libjansson-dev uuid-dev
      libpcre2-dev ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd clinfo
      libmicrohttpd-dev libssl-dev ca-certificates util-linux
      iproute2 procps psmisc curl python3 strace gdb linux-perf"
# Node.js and npm: Debian's packages only when no node/npm is on the PATH
# (a machine may already carry a newer Node.js with its own npm, which
# Debian's npm package would conflict with).
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"

# DS4_DEPS_VERBOSE=1 (scripts/ds4-up.sh sets it) shows apt's and npm's own
# progress instead of hiding it.
out=/dev/null
[ -z "${DS4_DEPS_VERBOSE:-}" ] || out=/dev/stdout

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "deps: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >"$out"
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $missing >"$out"
  echo "deps: Debian packages installed"
fi

# npm packages (pinned in package.json / package-lock.json): the DeepSeek V4
# tokenizer data used by the model tool, and the reference clients of tests.
stamp=node_modules/.ds4-deps-stamp
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  echo "deps: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error >"$out"
  touch "$stamp"
  echo "deps: npm packages installed"
fi
