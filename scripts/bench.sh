#!/usr/bin/env bash
# s3nap against the shell pipes it replaces, row by row, on the same data in the same run:
#
#   1. FULL of a system tree (default /usr/share, read in place) into the local directory store
#        vs  tar -c | zstd -3 -T2 | gpg -z 0 --encrypt > file
#   2. FULL of 100,000 small files (1 KiB each, 100 directories) into the local store, same pipe
#   3. row 1's tree into S3 (moto on 127.0.0.1)  vs  the same pipe | upload-stdin.py
#   4. recover row 1's archive > /dev/null       vs  gpg -d | zstd -d > /dev/null
#   5. recover row 1's archive | tar -x          vs  gpg -d | zstd -d | tar -x
#   6. DIFF of the unchanged 100,000-file tree   vs  find TREE -printf '%p %s %T@\n'
#   7. s3nap's peak RSS in every row (a column of its own; target 128 MiB)
#
# Each row is the median of REPS pairs; within a pair s3nap and the baseline run back to back,
# and which goes first alternates from pair to pair, so neither always finds the other's
# page cache or dirty pages. The ratio is the median of the per-pair ratios s3nap/baseline.
# Machines here are shared and noisy: only the same-run ratio means something.
# gpg runs with -z 0: s3nap compresses with zstd outside OpenPGP, as the pipe does; gpg's own
# default ZIP compression would make the baseline several times slower (see README "Measured").
#
#   usage: scripts/bench.sh
#   REPS=N           pairs per row (default 5)
#   BENCH_TREE=DIR   the tree of rows 1, 3, 4 and 5 (default /usr/share; read, never written)
#   BENCH_FILES=N    small files of rows 2 and 6 (default 100000)
#   S3NAP_BIN=PATH   measure that binary instead of building this tree's release build
#   BENCH_PYTHON=PY  a Python with boto3 and moto (default .venv/bin/python, made by setup-tests.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${REPS:-5}
tree=$(realpath "${BENCH_TREE:-/usr/share}")
small_files=${BENCH_FILES:-100000}

if [ -n "${BENCH_PYTHON:-}" ]; then
  py=$BENCH_PYTHON
else
  bash scripts/setup-tests.sh >/dev/null
  py="$PWD/.venv/bin/python"
fi
if [ -n "${S3NAP_BIN:-}" ]; then
  s3nap_bin=$S3NAP_BIN
else
  # Several worktrees share this machine: one build at a time.
  flock /tmp/s3nap-build.lock cargo build --release --quiet
  s3nap_bin="$PWD/target/release/s3nap"
fi
scripts=$PWD/scripts

work=$(mktemp -d /var/tmp/s3nap-bench.XXXXXX)
server_pid=""
scratch_root=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  [ -z "$scratch_root" ] || rm -rf "$scratch_root"
  gpgconf --kill gpg-agent 2>/dev/null || true   # the agent gpg -d started in our GNUPGHOME
  rm -rf "$work"
}
trap cleanup EXIT
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
key=bench@s3nap.invalid
gpg --batch --quiet --passphrase '' --quick-gen-key "Bench <$key>" future-default default never
gpg --batch --export "$key" > "$work/bench.pub"
# The secret key for `recover --identity` (no passphrase); gpg -d finds it in GNUPGHOME.
(umask 077; gpg --batch --export-secret-keys "$key" > "$work/bench.sec")

# ---------------------------------------------------------------------------------------
# Data

# Row 2 and 6: 100,000 files of 1 KiB in 100 directories, each file different (hex of
# random bytes, so zstd gets about 2:1 as on text, and no two files are alike).
python3 - "$work/small" "$small_files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(14)
per_dir = max(1, n // 100)
for i in range(n):
    d = os.path.join(root, f"d{i // per_dir:03d}")
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
        f.write(rng.randbytes(512).hex())
PY
small=$work/small

# Both trees come from the page cache in every timed run, the first one included.
tar -c -C / "${tree#/}" "${small#/}" > /dev/null

size_of() { du -sb --apparent-size "$1" | cut -f1; }
tree_bytes=$(size_of "$tree"); tree_files=$(find "$tree" | wc -l)
small_bytes=$(size_of "$small")

# ---------------------------------------------------------------------------------------
# The S3 server (moto keeps objects in memory and temporary files: those go under $work).

mkdir "$work/tmp"
mkfifo "$work/server-in"
TMPDIR="$work/tmp" "$py" scripts/s3-test-server.py --credentials-file "$work/s3key.txt" \
  < "$work/server-in" > "$work/server.json" 2>/dev/null &
server_pid=$!
exec 9> "$work/server-in"   # the server runs until this closes (or is killed on exit)
while [ ! -s "$work/server.json" ]; do sleep 0.2; done
endpoint=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['endpoint'])" "$work/server.json")
s3() { # s3 create|empty: the bucket "bench" (emptied between pairs, so moto's memory stays flat)
  "$py" - "$1" "$endpoint" "$work/s3key.txt" <<'PY'
import sys, boto3
op, ep, keyfile = sys.argv[1:4]
c = dict(l.strip().split("=", 1) for l in open(keyfile) if "=" in l)
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                  aws_access_key_id=c["key"], aws_secret_access_key=c["secret"])
if op == "create":
    s3.create_bucket(Bucket="bench")
else:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench"):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket="bench", Key=o["Key"])
    for u in s3.list_multipart_uploads(Bucket="bench").get("Uploads", []):
        s3.abort_multipart_upload(Bucket="bench", Key=u["Key"], UploadId=u["UploadId"])
PY
}
s3 create

# ---------------------------------------------------------------------------------------
# Configurations: one per store, each with its own DiffDir.

# The day a run acts on (--now), as a UTC day index. A SimpleCycle run is a FULL when
# day % (Diffs + 1) == 0 (Frequency 1, Phase 0), else a DIFF on the previous run. Rows 1-3
# start each s3nap run from an empty store and DiffDir (a set's first run is always a FULL)
# on such a day; row 6's DIFFs run on the days after it, so Diffs leaves room for REPS of them.
diffs=$(( reps > 6 ? reps : 6 ))
full_day=$(( (20454 / (diffs + 1) + 1) * (diffs + 1) ))   # the first such day after 2026-01-01
day() { date -u -d "@$(( $1 * 86400 + 3 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ; }

conf() { # conf NAME BUCKET TREE: writes $work/NAME.conf
  cat > "$work/$1.conf" <<CONF
Bucket $2
Endpoint $endpoint
S3Keyfile $work/s3key.txt
DiffDir $work/$1.state
GpgRecipient $key
GpgKeyring $work/bench.pub
Host bench
Diffs $diffs
Directory $3
CONF
}
conf local "$work/store" "$tree"
conf small "$work/store-small" "$small"
conf s3 "s3://bench/s3nap" "$tree"

# ---------------------------------------------------------------------------------------
# Measuring

# Every s3nap process runs under its own /usr/bin/time, so its peak RSS is its own (the outer
# time measures the whole pipe: its %M is the largest process of the pipe, tar's or gpg's too).
s3nap() { /usr/bin/time -f %M -o "$work/s3nap.rss" "$s3nap_bin" "$@"; }
export -f s3nap
export work s3nap_bin tree small key py endpoint scripts

timed() { # timed SIDE FUNCTION: runs FUNCTION (exported) in a bash of its own, under time;
          # appends seconds to $work/SIDE.times, and s3nap's peak RSS to $work/rss
  rm -f "$work/s3nap.rss"
  if ! /usr/bin/time -f "%e %M" -o "$work/time" bash -euo pipefail -c "$2" \
       > "$work/stdout" 2> "$work/stderr"; then
    # Exit status 1 is s3nap's "committed, with warnings" (and tar's "a file changed while
    # read"): noted under the table, not fatal. Anything else ends the benchmark.
    grep -q '^Command exited with non-zero status 1$' "$work/time" || {
      echo "$row, $1 ($2) failed:"; cat "$work/time" "$work/stderr"; exit 1; }
    echo "$row, $1: exit status 1: $(tail -3 "$work/stderr" | tr '\n' ' ')" >> "$work/notes"
  fi
  grep -v '^Command' "$work/time" | cut -d' ' -f1 >> "$work/$1.times"
  [ ! -s "$work/s3nap.rss" ] || grep -v '^Command' "$work/s3nap.rss" >> "$work/rss"
  # Anything s3nap had to warn about goes into the notes as well.
  grep -E ' (WARN|ERROR)' "$work/stderr" | sed "s|^|$row, $1: |" >> "$work/notes" || true
}

expect_run() { # expect_run KIND: the run just timed printed (--json) a committed KIND run
  python3 - "$1" "$work/stdout" "$row" >> "$work/notes" <<'PY'
import json, sys
kind, out, row = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [json.loads(l) for l in open(out) if l.startswith("{")]
for r in runs:
    if r.get("kind") != kind or r.get("outcome") != "committed":
        print(f"{row}: expected a committed {kind} run, got: {json.dumps(r)}")
if len(runs) != 1:
    print(f"{row}: expected one set in the run, got {len(runs)}")
PY
}

measure() { # measure ROW TARGET BASELINE_LABEL: REPS pairs of s3nap_side and baseline_side,
            # each run after prepare SIDE (untimed), each s3nap run followed by check
  row=$1
  rm -f "$work/s3nap.times" "$work/baseline.times" "$work/rss"
  for rep in $(seq 1 "$reps"); do
    export rep   # row 6's runs act on a day of their own
    order="s3nap baseline"; [ $(( rep % 2 )) -eq 1 ] || order="baseline s3nap"
    for side in $order; do
      prepare "$side"
      sync   # the previous run's writes are flushed before this one, not during it
      timed "$side" "${side}_side"
      [ "$side" = baseline ] || check
    done
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(echo $(cat "$work/s3nap.times"))" \
    "$(echo $(cat "$work/baseline.times"))" "$(echo $(cat "$work/rss"))" "$2" "$3" >> "$work/results"
}

pipe="tar -c -C / TREE \\| zstd -3 -T2 \\| gpg -z 0 --encrypt"
zstd_gpg() { zstd -3 -T2 -q | gpg --batch --quiet --trust-model always -z 0 --encrypt -r "$key"; }
export -f zstd_gpg

# Row 1: FULL of the tree into the local store. Each pair starts from an empty store and
# DiffDir (outside the timing), so every run is a set's first run: a FULL.
prepare() { [ "$1" = baseline ] || rm -rf "$work/store" "$work/local.state"; }
check() { expect_run full; }
s3nap_side() { s3nap -c "$work/local.conf" --json --now "$(day "$full_day")"; }
baseline_side() { tar -c -C / "${tree#/}" | zstd_gpg > "$work/baseline.gpg"; }
export -f s3nap_side baseline_side day; export full_day
measure "1. FULL, $tree → local store" "≤ 1.10" "\`$pipe > FILE\`"
tree_stored=$(stat -c %s "$work/baseline.gpg")

# Row 2: FULL of the 100,000 small files into the local store. The last run's FULL and
# DiffDir stay for row 6.
prepare() { [ "$1" = baseline ] || rm -rf "$work/store-small" "$work/small.state"; }
s3nap_side() { s3nap -c "$work/small.conf" --json --now "$(day "$full_day")"; }
baseline_side() { tar -c -C / "${small#/}" | zstd_gpg > "$work/baseline-small.gpg"; }
export -f s3nap_side baseline_side
measure "2. FULL, $small_files files of 1 KiB → local store" "≤ 1.30" "\`$pipe > FILE\`"

# Row 3: the tree into S3. Each pair starts from an empty bucket and DiffDir.
prepare() { s3 empty; rm -rf "$work/s3.state"; }   # both sides: moto holds the same
check() { expect_run full; }
s3nap_side() { s3nap -c "$work/s3.conf" --json --now "$(day "$full_day")"; }
baseline_side() {
  tar -c -C / "${tree#/}" | zstd_gpg | "$py" "$scripts/upload-stdin.py" "$endpoint" "$work/s3key.txt" bench baseline.tar.zst.gpg
}
export -f s3nap_side baseline_side
measure "3. FULL, $tree → S3 (moto)" "≤ 1.10" "\`$pipe \\| upload-stdin.py\` (boto3 multipart, as \`aws s3 cp -\`)"
s3 empty

# Row 4: recovery of row 1's archive (the last pair's s3nap run and baseline file).
prepare() { :; }
check() { :; }
s3nap_side() { s3nap -c "$work/local.conf" recover "$tree" --identity "$work/bench.sec" > /dev/null; }
baseline_side() { gpg --batch --quiet -d < "$work/baseline.gpg" | zstd -d -q > /dev/null; }
export -f s3nap_side baseline_side
measure "4. recover the row-1 archive > /dev/null" "≤ 1.0" "\`gpg -d < FILE \\| zstd -d > /dev/null\`"

# Row 5: the same recovery, extracted. Each run extracts into an empty directory in memory
# (/dev/shm when there is room): on disk, writing back 50,000 files takes most of the time
# and varies by seconds from run to run, which would hide the pipelines being compared.
where=disk
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt $(( 3 * $(du -sk "$tree" | cut -f1) )) ]; then
  scratch_root=$(mktemp -d /dev/shm/s3nap-bench.XXXXXX)
  where=tmpfs
fi
export scratch="${scratch_root:-$work}/scratch"
prepare() { rm -rf "$scratch"; mkdir "$scratch"; }
s3nap_side() { s3nap -c "$work/local.conf" recover "$tree" --identity "$work/bench.sec" | tar -x -C "$scratch"; }
baseline_side() { gpg --batch --quiet -d < "$work/baseline.gpg" | zstd -d -q | tar -x -C "$scratch"; }
export -f s3nap_side baseline_side
measure "5. recover the row-1 archive \\| tar -x (into $where)" "≤ 1.0" "\`gpg -d < FILE \\| zstd -d \\| tar -x\`"
rm -rf "$scratch"

# Row 6: DIFF of the unchanged small tree on the days after row 2's FULL (the --json output
# must say "diff"), against a walk reading the metadata a DIFF needs.
prepare() { :; }
check() { expect_run diff; }
s3nap_side() { s3nap -c "$work/small.conf" --json --now "$(day $(( full_day + rep )))"; }
baseline_side() { find "$small" -printf '%p %s %T@\n' > /dev/null; }
export -f s3nap_side baseline_side
measure "6. DIFF, unchanged $small_files-file tree → local store" "≤ 1.5" "\`find TREE -printf '%p %s %T@\n' > /dev/null\`"
diff_stored=$(find "$work/store-small" -name '*.diff.tar.zst.gpg' -printf '%s\n' | sort -n | tail -1)

# ---------------------------------------------------------------------------------------
# Report

python3 - "$work/results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("| work | s3nap (s) | baseline (s) | ratio | target | s3nap peak RSS (MiB), max; target ≤ 128 | baseline command |")
print("|---|---:|---:|---:|---|---:|---|")
for name, s, b, rss, target, cmd in rows:
    s, b = [float(x) for x in s.split()], [float(x) for x in b.split()]
    # b may be 0.00 at time's resolution (a fast find): the pair's ratio is then against 0.01 s.
    ratio = statistics.median(x / max(y, 0.01) for x, y in zip(s, b))
    limit = float(target.split()[-1])
    mib = max(int(x) for x in rss.split()) / 1024
    print(f"| {name} | {statistics.median(s):.2f} | {statistics.median(b):.2f} | {ratio:.2f} "
          f"| {target} {'met' if ratio <= limit else 'MISSED'} "
          f"| {mib:.0f} {'met' if mib <= 128 else 'MISSED'} | {cmd} |")
# The pairs themselves, to see how noisy a median is.
print("\nPairs, s3nap/baseline seconds (pairs 1, 3, 5… ran s3nap first, the others the baseline):")
for name, s, b, *_ in rows:
    print(f"- {name.split('.')[0]}: " + ", ".join(f"{x}/{y}" for x, y in zip(s.split(), b.split())))
PY
echo
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM; s3nap $("$s3nap_bin" --version | cut -d' ' -f2) ($s3nap_bin); $(date -u +%Y-%m-%d)."
echo "Data: $tree $(( tree_bytes / 1048576 )) MiB in $tree_files entries (stored $(( tree_stored / 1048576 )) MiB by the pipe);" \
  "$small_files small files $(( small_bytes / 1048576 )) MiB (stored $(( $(stat -c %s "$work/baseline-small.gpg") / 1048576 )) MiB by the pipe; a DIFF of it $(( diff_stored / 1024 )) KiB)."
echo "Median of $reps pairs per row (s3nap and baseline back to back, first side alternating); ratio = median of the per-pair ratios s3nap/baseline."
if [ -s "$work/notes" ]; then echo; echo "Notes:"; sed 's/^/- /' "$work/notes"; fi
