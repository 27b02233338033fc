#!/usr/bin/env bash
# Time of a DIFF of an unchanged tree of many small files, against a bare `find` walk of the
# same tree (both after a warm-up, so the page cache serves both), in the same run.
#   usage: scripts/bench-incremental.sh [FILES]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
cargo build --release --quiet
work=$(mktemp -d /var/tmp/s3nap-inc.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$work/tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
for i in range(n):
    d = os.path.join(root, f"d{i // per:04d}", f"s{(i // 100) % 10}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "w") as f:
        f.write(f"file {i}\n")
PY
cat > "$work/s3nap.conf" <<CONF
Bucket $work/store
DiffDir $work/state
Host bench
Directory $work/tree
CONF
s3nap="$PWD/target/release/s3nap"
"$s3nap" -c "$work/s3nap.conf" --now 2026-01-01T03:00:00Z 2>/dev/null     # the FULL
find "$work/tree" -printf '%s %T@ %C@ %i\n' > /dev/null                    # warm-up
t() { /usr/bin/time -f "%e" -o "$work/t" "$@" > /dev/null 2>&1; cat "$work/t"; }
diffs=""; finds=""
for day in 2 3 4; do
  diffs="$diffs $(t "$s3nap" -c "$work/s3nap.conf" --now "2026-01-0${day}T03:00:00Z")"
  finds="$finds $(t find "$work/tree" -printf '%s %T@ %C@ %i\n')"
done
stored=$(find "$work/store" -name '*.diff.tar.zst' -printf '%s\n' | sort -n | tail -1)
python3 - "$files" "$diffs" "$finds" "$stored" <<'PY'
import statistics, sys
n, d, f, stored = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
dm, fm = statistics.median(map(float, d)), statistics.median(map(float, f))
print(f"{n} unchanged files: DIFF {dm:.2f}s (stored {stored/1024:.0f} KiB), find walk {fm:.2f}s, ratio DIFF/find {dm/fm:.1f}")
PY
