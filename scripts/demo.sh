#!/usr/bin/env bash
# A real backup and recovery on a fresh machine, with the embedded local directory store:
# builds s3nap, makes a throwaway OpenPGP key, backs up an example tree with
# conf/s3nap.conf.example, lists it, recovers it with s3nap and with the stock tools
# (gpg -d | zstd -d | tar x), and compares both with the original.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in gpg tar zstd; do
  if ! command -v "$tool" >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnupg tar zstd >/dev/null
    break
  fi
done
cargo build --quiet
s3nap="$PWD/target/debug/s3nap"
conf="$PWD/conf/s3nap.conf.example"

demo=/tmp/s3nap-demo
rm -rf "$demo"
mkdir -p "$demo/tree" "$demo/gnupg"
chmod 700 "$demo/gnupg"
export GNUPGHOME="$demo/gnupg"
gpg --batch --quiet --passphrase '' --quick-gen-key 'Demo <demo@s3nap.invalid>' future-default default never
gpg --batch --export demo@s3nap.invalid > "$demo/demo.pub"
gpg --batch --export-secret-keys demo@s3nap.invalid > "$demo/demo.sec"

# An example tree: this repository's sources, a symlink, a hard link, a private file, a cache.
cp -a src conf scripts README.md "$demo/tree/"
ln -s README.md "$demo/tree/link-to-readme"
ln "$demo/tree/README.md" "$demo/tree/hardlink-to-readme"
echo "private" > "$demo/tree/private" && chmod 600 "$demo/tree/private"
mkdir -p "$demo/tree/cache" && echo "not backed up" > "$demo/tree/cache/junk"

echo "== s3nap -c conf/s3nap.conf.example -t   (the plan; changes nothing)"
"$s3nap" -c "$conf" -t
echo "== s3nap -c conf/s3nap.conf.example      (back up)"
"$s3nap" -c "$conf"
echo "== s3nap list"
"$s3nap" -c "$conf" list
echo "== s3nap recover /tmp/s3nap-demo/tree --identity demo.sec | tar -x"
mkdir -p "$demo/restored"
"$s3nap" -c "$conf" recover "$demo/tree" --identity "$demo/demo.sec" | tar -x -C "$demo/restored"
rm -rf "$demo/expected" && cp -a "$demo/tree" "$demo/expected" && rm -rf "$demo/expected/cache"
diff -r "$demo/expected" "$demo/restored$demo/tree"
echo "== without s3nap: gpg -d | zstd -d | tar -x"
mkdir -p "$demo/stock"
archive=$(find "$demo/store" -name '*.tar.zst.gpg' | head -1)
gpg --batch --quiet --decrypt "$archive" | zstd -d | tar -x -C "$demo/stock"
diff -r "$demo/expected" "$demo/stock$demo/tree"
echo "OK: both recoveries equal the backed-up tree (store: $demo/store)"
