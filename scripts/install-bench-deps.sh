#!/usr/bin/env bash
# Install what the benchmarks need beyond the venv: nginx (the server faster than the client
# under test) and taskset. For a fresh Debian, as root (or with sudo).
set -euo pipefail

have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
if have_nginx && command -v taskset >/dev/null 2>&1; then
    exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# Keep the package's post-install script from starting a system nginx on port 80: the
# benchmarks start their own. policy-rc.d exit 101 = "action not allowed" (Debian's convention).
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

$sudo apt-get update
$sudo apt-get install -y --no-install-recommends nginx-light util-linux \
    || $sudo apt-get install -y --no-install-recommends nginx util-linux
have_nginx
echo "bench deps: $(/usr/sbin/nginx -v 2>&1)"
