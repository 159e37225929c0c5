#!/usr/bin/env bash
# Install what the test suite needs beyond the venv: curl (the non-Python TLS client of the
# inbound tests). Does nothing when it is there; on a fresh Debian, as root (or with sudo).
set -euo pipefail

if command -v curl >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends curl ca-certificates
