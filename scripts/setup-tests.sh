#!/usr/bin/env bash
# Installs what the test suite talks to: GnuPG, GNU tar, zstd and xz, man-db (the man page
# test), util-linux (script, setpriv, flock), acl (setfacl), MariaDB, PostgreSQL and Subversion
# (the tests start their own servers on Unix sockets in temporary directories), openssl (the
# endpoint tests make a CA and a server certificate) from Debian, moto's S3 server (pinned) in a
# virtualenv at .venv, aws-cli (pinned; the quilt's stock-tool recovery script uses it) in a
# virtualenv of its own at .venv-aws, and s3s-fs (pinned), the second S3 server, built from
# crates.io into .tools. Idempotent; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in gpg tar zstd xz python3 man script setpriv flock setfacl mariadbd mariadb-dump psql pg_dump svnadmin svn openssl; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ] || ! python3 -m venv --help >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    gnupg tar zstd xz-utils python3 python3-venv man-db util-linux bsdutils acl \
    mariadb-server mariadb-client postgresql postgresql-client subversion openssl >/dev/null
fi

MOTO_VERSION=5.2.5
if ! .venv/bin/python -c "import moto, boto3, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

# aws-cli for scripts/quilt-recover (tests/quilt_recovery.rs): its own virtualenv, since awscli
# pins a botocore of its own that moto's boto3 does not take.
AWSCLI_VERSION=1.46.2
if [ "$(.venv-aws/bin/aws --version 2>&1 | cut -d' ' -f1)" != "aws-cli/$AWSCLI_VERSION" ]; then
  python3 -m venv .venv-aws
  .venv-aws/bin/pip install -q --disable-pip-version-check "awscli==$AWSCLI_VERSION"
fi

# s3s-fs: an S3 server over a directory, independent of moto (tests/second_server.rs). Built
# from source (5-11 minutes on CI's two cores) in cargo's own temporary target directory, which
# it removes afterwards; kept in .tools (git-ignored) and rebuilt only for another version.
S3S_FS_VERSION=0.14.1
if [ "$(.tools/bin/s3s-fs --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]; then
  echo "building s3s-fs $S3S_FS_VERSION into .tools (5-11 minutes)"
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --force --version "$S3S_FS_VERSION" \
    --features binary --root .tools s3s-fs
fi

echo "test tools ready: $(gpg --version | head -1), $(tar --version | head -1), moto $MOTO_VERSION, aws-cli $AWSCLI_VERSION, s3s-fs $S3S_FS_VERSION"
