#!/usr/bin/env bash
# Quilting's saving, measured: two FULLs of the same unchanged tree with `Quilt yes` into the
# local directory store, and the bytes each added to the store (every file it wrote: archive,
# range hashes, manifest, quilt content). README "Quilting" quotes the figure.
#
# The tree: BENCH_QUILT_MB megabytes of random (incompressible) data in files of 2 MB each
# (quilted), and 1,000 small files of 2,000 random bytes (inline in the archive, under
# QuiltMinSize).
#
#   usage: scripts/bench-quilt.sh
#   BENCH_QUILT_MB=N  the large file's size (default 200)
#   S3NAP_BIN=PATH    measure that binary instead of building this tree's release build
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${BENCH_QUILT_MB:-200}
bin=${S3NAP_BIN:-}
if [ -z "$bin" ]; then
    # Several worktrees may share this machine: one build at a time (as scripts/bench.sh).
    flock /tmp/s3nap-build.lock cargo build --release --quiet
    bin=${CARGO_TARGET_DIR:-target}/release/s3nap
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key "Quilt Bench <bench@example.org>" future-default default never 2>/dev/null
gpg --export bench@example.org >"$work/cert.pgp"
mkdir -p "$work/tree/d" "$work/store"
for i in $(seq 1 $((mb / 2))); do head -c 2000000 /dev/urandom >"$work/tree/d/big$i"; done
for i in $(seq 1 1000); do head -c 2000 /dev/urandom >"$work/tree/small$i"; done
(umask 077 && python3 -c "import secrets; print(secrets.token_hex(32))" >"$work/quilt.key")
cat >"$work/s3nap.conf" <<CONF
Bucket $work/store
DiffDir $work/state
Host bench
GpgRecipient bench@example.org
GpgKeyring $work/cert.pgp
QuiltKeyFile $work/quilt.key
<Cycle c>
  Diffs 0
  Fulls 2
  Quilt yes
  Directory $work/tree
</Cycle>
CONF
bytes() { du -sb --apparent-size "$work/store" | cut -f1; }
empty=$(bytes)
"$bin" -c "$work/s3nap.conf" --now 2026-11-10T03:00:00Z 2>/dev/null
after_first=$(bytes)
"$bin" -c "$work/s3nap.conf" --now 2026-11-11T03:00:00Z 2>/dev/null
after_second=$(bytes)
find "$work/store" -name '*.manifest.json' | sort | python3 -c '
import json, sys
for path in sys.stdin.read().split():
    m = json.load(open(path))
    q = m["quilt"]
    print("%s %s: archive %d bytes, quilt content uploaded %d bytes, files reused %d"
          % (m["run"], m["kind"], m["archive"]["stored_size"], q["uploaded_bytes"], q["reused"]))
'
first=$((after_first - empty)); second=$((after_second - after_first))
python3 -c "import sys; f, s = map(int, sys.argv[1:]); print('second FULL added %d bytes to the store, %.3f %% of the first (%d)' % (s, 100 * s / f, f))" "$first" "$second"
