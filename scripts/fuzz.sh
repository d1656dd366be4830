#!/usr/bin/env bash
# A long property-based run over every variable and every label (CI runs a short one):
#   bash scripts/fuzz.sh [EXAMPLES]      (default 20000 examples per test)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KAT_ROOT"
kat_ensure_machine
FUZZ_EXAMPLES="${1:-20000}" exec "$KAT_ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider \
    --hypothesis-show-statistics tests/integration/test_properties.py
