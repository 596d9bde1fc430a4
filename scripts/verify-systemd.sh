#!/usr/bin/env bash
# Check examples/systemd/billing.service with `systemd-analyze verify`, when it is
# installed (Debian package `systemd`). The unit's paths are pointed at binaries
# that exist here; everything else is checked as written.
set -euo pipefail
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze not installed: skipping the unit check (apt-get install systemd)"
  exit 0
fi
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed -e "s|/usr/local/bin/kmsenv|$bin|" -e "s|/usr/bin/billing|/bin/true|" \
  examples/systemd/billing.service > "$dir/billing.service"
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$dir/billing.service"
echo "examples/systemd/billing.service: systemd-analyze verify ok"
