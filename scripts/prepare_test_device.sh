#!/usr/bin/env bash
# Placeholder until the SSH test device lands: installs OpenSSH server when running as root.
set -euo pipefail
if [ "$(id -u)" = 0 ] && [ ! -x /usr/sbin/sshd ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
