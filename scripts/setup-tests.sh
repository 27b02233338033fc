#!/usr/bin/env bash
# Installs what the test suite talks to: GnuPG, GNU tar, zstd and xz, man-db (the man page
# test), util-linux (script, setpriv, flock), acl (setfacl), MariaDB, PostgreSQL and Subversion
# (the tests start their own servers on Unix sockets in temporary directories), openssl (the
# endpoint tests make a CA and a server certificate) from Debian, and moto's S3 server (pinned) in a
# virtualenv at .venv. Idempotent; run as root or with sudo available.
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
echo "test tools ready: $(gpg --version | head -1), $(tar --version | head -1), moto $MOTO_VERSION"
