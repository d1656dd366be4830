#!/usr/bin/env bash
# The whole test suite: sets the machine up (idempotently), then ruff, mypy --strict, the layering contract and
# pytest (unit and integration). Extra arguments go to pytest. CI runs it with REQUIRE_INTEGRATION=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KAT_ROOT"
kat_ensure_machine
kat_say "building the image from the Dockerfile (docker-keepalived:latest)"
kat_build_image
kat_say "removing containers left by earlier killed test runs (label kat.test)"
"$KAT_DOCKER" ps -aq --filter label=kat.test | xargs -r "$KAT_DOCKER" rm -f >/dev/null
for ns in $(ip netns list 2>/dev/null | awk '/^kat-/ {print $1}'); do  # namespaces of killed runs
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
done
bin="$KAT_ROOT/.venv/bin"
step() { kat_say "== $*"; "$@"; }
step "$bin/ruff" check .
step "$bin/ruff" format --check .
step "$bin/mypy"
step "$bin/lint-imports"
kat_say "== pytest $*"
status=0
"$bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    kat_say "pytest collected no tests: that is a failure"
    exit 1
fi
exit "$status"
