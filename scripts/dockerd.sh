#!/usr/bin/env bash
# Start, stop or check the Docker engine the tests use: scripts/dockerd.sh {start|stop|restart|status}
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in
    start) kat_ensure_dockerd ;;
    stop) kat_stop_dockerd ;;
    restart) kat_stop_dockerd && kat_ensure_dockerd ;;
    status) if kat_dockerd_up; then echo running; else echo stopped; exit 1; fi ;;
    *) echo "usage: $0 {start|stop|restart|status}" >&2; exit 2 ;;
esac
