#!/usr/bin/env bash
# Peak RSS of s3nap backing up a 2 GiB stream (one 2 GiB file, incompressible) into the local
# store with the default ChunkSize (16 MiB) and 4 parts in flight. The bound the design
# promises is about (2 + 4 + 1) × 16 MiB plus the compressor's and encryptor's buffers.
#   usage: scripts/bench-memory.sh [GIB]
set -euo pipefail
cd "$(dirname "$0")/.."
gib=${1:-2}
cargo build --release --quiet
work=$(mktemp -d /var/tmp/s3nap-mem.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'Bench <bench@s3nap.invalid>' future-default default never
gpg --batch --export bench@s3nap.invalid > "$work/bench.pub"
mkdir "$work/tree"
head -c "${gib}G" /dev/urandom > "$work/tree/big.bin"
cat > "$work/s3nap.conf" <<CONF
Bucket $work/store
DiffDir $work/state
GpgRecipient bench@s3nap.invalid
GpgKeyring $work/bench.pub
Host mem
Directory $work/tree
CONF
/usr/bin/time -f "%e %M" -o "$work/time" target/release/s3nap -c "$work/s3nap.conf" 2>/dev/null
read -r secs rss < "$work/time"
stored=$(find "$work/store" -name '*.gpg' -printf '%s')
echo "backed up ${gib} GiB (stored $(( stored / 1048576 )) MiB) in ${secs}s; peak RSS $(( rss / 1024 )) MiB"
