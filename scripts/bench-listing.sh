#!/usr/bin/env bash
# Listing speed of a bucket set's snapshot: the parallel version listing (8 workers, work-stealing
# over prefixes and key ranges) against one sequential ListObjectVersions pagination of the same
# 100,000-version bucket (moto), in the same run; median of 3. Twice: moto as it answers on this
# machine (its Python server is the bottleneck, one core), and with 30 ms added to each listing
# request, about the round trip to an S3 region elsewhere.
#   usage: scripts/bench-listing.sh [LATENCY_MS...]   (default: 0 30)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-tests.sh >/dev/null
export S3NAP_TEST_PYTHON="$PWD/.venv/bin/python"
latencies=("$@")
[ ${#latencies[@]} -eq 0 ] && latencies=(0 30)
for latency in "${latencies[@]}"; do
    S3NAP_LIST_LATENCY_MS=$latency cargo bench --quiet --bench listing 2>/dev/null | grep '^listing'
done
