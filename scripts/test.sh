#!/usr/bin/env bash
# The whole test suite against real components: sets up the tools, then runs every test.
# Each S3 test starts its own moto server on 127.0.0.1 (scripts/s3-test-server.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-tests.sh
export S3NAP_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --all-targets "$@"
