#!/usr/bin/env bash
# Quilting's saving, measured: two FULLs of the same unchanged tree with `Quilt yes` into the
# local directory store, and the bytes each stored (its archive plus the quilt content it
# uploaded, as its manifest records them). README "Quilting" quotes the figure.
#
# The tree: one random (incompressible) file of BENCH_QUILT_MB megabytes and 50 small files of
# 2,000 random bytes (inline in the archive, under QuiltMinSize).
#
#   usage: scripts/bench-quilt.sh
#   BENCH_QUILT_MB=N  the large file's size (default 200)
#   S3NAP_BIN=PATH    measure that binary instead of building this tree's release build
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${BENCH_QUILT_MB:-200}
bin=${S3NAP_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
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
head -c "$((mb * 1000000))" /dev/urandom >"$work/tree/d/big"
for i in $(seq 1 50); do head -c 2000 /dev/urandom >"$work/tree/small$i"; done
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
"$bin" -c "$work/s3nap.conf" --now 2026-11-10T03:00:00Z 2>/dev/null
"$bin" -c "$work/s3nap.conf" --now 2026-11-11T03:00:00Z 2>/dev/null
find "$work/store" -name '*.manifest.json' | sort | python3 -c '
import json, sys
stored = []
for path in sys.stdin.read().split():
    m = json.load(open(path))
    archive, quilt = m["archive"]["stored_size"], m["quilt"]
    stored.append(archive + quilt["uploaded_bytes"])
    print("%s: archive %d bytes, quilt content uploaded %d bytes, files reused %d"
          % (m["run"], archive, quilt["uploaded_bytes"], quilt["reused"]))
print("second FULL stored %d bytes, %.3f %% of the first (%d)"
      % (stored[1], 100 * stored[1] / stored[0], stored[0]))
'
