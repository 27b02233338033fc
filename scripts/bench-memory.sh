#!/usr/bin/env bash
# Peak RSS of s3nap streaming GIB GiB of incompressible data (a <Command> set: `head -c`) into
# the local store at the default settings (ChunkSize 16 MiB, ParallelUploads 4, MemoryLimit
# 256 MiB), against the same run of 1 GiB measured just before: memory must not grow with the
# stream (ratio about 1). Then the part schedule s3nap computes for 20 GiB, 1 TiB and 5 TiB
# (benches/schedule.rs). Needs GIB GiB free under /var/tmp (the local store writes the object
# once, as the parts arrive).
#   usage: scripts/bench-memory.sh [GIB]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
gib=${1:-20}
cargo build --release --quiet
work=$(mktemp -d /var/tmp/s3nap-mem.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'Bench <bench@s3nap.invalid>' future-default default never
gpg --batch --export bench@s3nap.invalid > "$work/bench.pub"

# Peak RSS (KiB) and seconds of one run storing SIZE GiB.
measure() {
  local size=$1
  rm -rf "$work/store" "$work/state"
  cat > "$work/s3nap.conf" <<CONF
Bucket $work/store
DiffDir $work/state
GpgRecipient bench@s3nap.invalid
GpgKeyring $work/bench.pub
Host mem
<Command stream>
  Run /usr/bin/head -c ${size}G /dev/urandom
</Command>
CONF
  /usr/bin/time -f "%M %e" -o "$work/time" target/release/s3nap -c "$work/s3nap.conf" --no-progress 2>/dev/null
  cat "$work/time"
}

read -r small small_secs < <(measure 1)
read -r big big_secs < <(measure "$gib")
stored=$(find "$work/store" -name '*.gpg' -printf '%s')
echo "1 GiB stream: peak RSS $(( small / 1024 )) MiB (${small_secs}s)"
echo "${gib} GiB stream (stored $(( stored / 1048576 )) MiB): peak RSS $(( big / 1024 )) MiB (${big_secs}s)"
echo "ratio ${gib} GiB / 1 GiB: $(awk -v a="$big" -v b="$small" 'BEGIN { printf "%.2f", a / b }') (MemoryLimit 256 MiB)"
cargo bench --quiet --bench schedule 2>/dev/null
