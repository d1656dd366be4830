#!/usr/bin/env bash
# The two-host demo: builds the image, starts two simulated hosts each with a front end and the supervisor, kills the
# master's front end, shows the VIP move and a client answered by the backup, restores it, and cleans up.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KAT_ROOT"
kat_ensure_machine
started=$(date +%s%N)
kat_build_image
kat_say "image docker-keepalived:latest built ($(( ($(date +%s%N) - started) / 1000000 )) ms)"
exec "$KAT_ROOT/.venv/bin/python" -m lab.demo
