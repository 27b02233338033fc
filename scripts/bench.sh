#!/usr/bin/env bash
# Throughput of a full backup, side by side in one run with the shell pipeline it replaces:
#   s3nap -c CONF                      vs   tar -c | zstd -3 -T2 | gpg --encrypt -r KEY | upload
# (twice: gpg as is, which also ZIP-compresses, and gpg -z 0, which like s3nap does not)
# against the local S3 server (moto) and against the local directory store (where the baseline
# writes to a file). Reports wall times, their ratio and s3nap's peak RSS. Machines here are
# shared and noisy: only the same-run ratio means something.
#   usage: scripts/bench.sh [TREE_MIB]   (default 512: half random, half compressible text)
#   S3NAP_BIN=PATH measures that binary instead of this tree's release build (to compare two).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-512}
bash scripts/setup-tests.sh >/dev/null
if [ -n "${S3NAP_BIN:-}" ]; then
  s3nap=$S3NAP_BIN
else
  cargo build --release --quiet
  s3nap="$PWD/target/release/s3nap"
fi
py="$PWD/.venv/bin/python"

work=$(mktemp -d /var/tmp/s3nap-bench.XXXXXX)
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'Bench <bench@s3nap.invalid>' future-default default never
gpg --batch --export bench@s3nap.invalid > "$work/bench.pub"

# The tree: 16 MiB files, half incompressible, half log-like text.
mkdir -p "$work/tree"
half=$(( size_mib / 32 ))
for i in $(seq 1 "$half"); do head -c 16M /dev/urandom > "$work/tree/random-$i.bin"; done
head -c 16M < <(yes "2026-11-22T03:15:00Z web1 nginx: GET /index.html 200 612 bytes in 0.002s") > "$work/tree/log-1.txt"
for i in $(seq 2 "$half"); do cp "$work/tree/log-1.txt" "$work/tree/log-$i.txt"; echo "$i" >> "$work/tree/log-$i.txt"; done
tree_bytes=$(du -sb "$work/tree" | cut -f1)

# The S3 server.
mkfifo "$work/server-in"
"$py" scripts/s3-test-server.py --credentials-file "$work/s3key.txt" < "$work/server-in" > "$work/server.json" 2>/dev/null &
server_pid=$!
exec 9> "$work/server-in"
while [ ! -s "$work/server.json" ]; do sleep 0.2; done
endpoint=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['endpoint'])" "$work/server.json")
"$py" - "$endpoint" "$work/s3key.txt" <<'PY'
import sys, boto3
ep, keyfile = sys.argv[1:3]
c = dict(l.strip().split("=", 1) for l in open(keyfile) if "=" in l)
boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=c["key"], aws_secret_access_key=c["secret"]).create_bucket(Bucket="bench")
PY

conf() { # $1: Bucket value, $2: extra lines
  cat > "$work/s3nap.conf" <<CONF
Bucket $1
Endpoint $endpoint
S3Keyfile $work/s3key.txt
DiffDir $work/state
GpgRecipient bench@s3nap.invalid
GpgKeyring $work/bench.pub
Host bench
ChunkSize 16MiB
Directory $work/tree
CONF
}

timed() { # prints "seconds peak_rss_kib" of the command
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr"; exit 1; }
  cat "$work/time"
}

report() { # name s3nap_times baseline_times baseline_z0_times
  python3 - "$1" "$2" "$3" "$4" "$tree_bytes" <<'PY'
import statistics, sys
name, a, b, c, size = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
med = lambda v: statistics.median(float(x) for x in v[0::2])
s, p, q = med(a), med(b), med(c)
rss = max(int(x) for x in a[1::2])
rate = lambda t: f"{size/t/2**20:.0f} MiB/s"
print(f"{name}: s3nap {s:.2f}s ({rate(s)}, peak RSS {rss/1024:.0f} MiB); "
      f"baseline gpg default {p:.2f}s ({rate(p)}), ratio s3nap/baseline {s/p:.2f}; "
      f"baseline gpg -z 0 {q:.2f}s ({rate(q)}), ratio {s/q:.2f}")
PY
}

echo "tree: $(( tree_bytes / 1048576 )) MiB"
for target in s3 local; do
  s_times=""; b_times=""; z_times=""
  for rep in 1 2 3; do
    if [ "$target" = s3 ]; then
      conf "s3://bench/s3nap-$rep"
      s_times="$s_times $(timed "$s3nap" -c "$work/s3nap.conf" --now "2026-01-0${rep}T00:00:00Z")"
      b_times="$b_times $(timed bash -c "tar -c -C / '${work#/}/tree' | zstd -3 -T2 -q | gpg --batch --quiet --trust-model always --encrypt -r bench@s3nap.invalid | '$py' scripts/upload-stdin.py '$endpoint' '$work/s3key.txt' bench baseline-$rep.tar.zst.gpg")"
      z_times="$z_times $(timed bash -c "tar -c -C / '${work#/}/tree' | zstd -3 -T2 -q | gpg --batch --quiet --trust-model always -z 0 --encrypt -r bench@s3nap.invalid | '$py' scripts/upload-stdin.py '$endpoint' '$work/s3key.txt' bench baseline-z0-$rep.tar.zst.gpg")"
    else
      rm -rf "$work/store" "$work/baseline.gpg"
      conf "$work/store"
      s_times="$s_times $(timed "$s3nap" -c "$work/s3nap.conf" --now "2026-01-0${rep}T00:00:00Z")"
      b_times="$b_times $(timed bash -c "tar -c -C / '${work#/}/tree' | zstd -3 -T2 -q | gpg --batch --quiet --trust-model always --encrypt -r bench@s3nap.invalid > '$work/baseline.gpg'")"
      z_times="$z_times $(timed bash -c "tar -c -C / '${work#/}/tree' | zstd -3 -T2 -q | gpg --batch --quiet --trust-model always -z 0 --encrypt -r bench@s3nap.invalid > '$work/baseline.gpg'")"
    fi
  done
  report "$target" "$s_times" "$b_times" "$z_times"
done
