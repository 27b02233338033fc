#!/usr/bin/env python3
"""Start moto's S3 server on 127.0.0.1 with SigV4 enforced, for s3nap's tests.

moto accepts any credentials unless INITIAL_NO_AUTH_ACTION_COUNT is set: then only the first
N requests go unauthenticated. We spend exactly those on creating an IAM user with an access
key, so every later request must be signed with that key (a wrong secret is refused, as on S3).

With `--user NAME=POLICY.json` (repeatable) it then creates, with that key's signed requests,
one more IAM user per option whose only permissions are the policy document in the file, and
adds its key pair to the JSON line under "users": {NAME: {"access_key", "secret_key"}}.
`--role NAME=POLICY.json[,EXTERNAL_ID]` likewise creates a role with that policy, which any
caller may assume (STS is served on the same port; with EXTERNAL_ID only with that
ExternalId, as a trust policy's condition demands), under "roles": {NAME: ARN}. moto
enforces such a policy's actions and resource ARNs (`arn:aws:s3:::BUCKET` for bucket calls,
`arn:aws:s3:::BUCKET/KEY` for object calls; HEAD counts as s3:GetObject, a multipart upload's
calls as s3:PutObject), but not its Condition elements: a statement with a condition never
matches a request.

Where moto's answers differ from S3's in ways s3nap depends on, the server is patched (each
patch below says why): GetBucketVersioning's root element, ListObjectVersions' key markers,
ListMultipartUploads' initiation times, the Content-MD5 and signed SHA-256 checks of PutObject
and UploadPart, AssumeRole's ExternalId condition, AssumeRoleWithWebIdentity taken unsigned.

Prints one JSON line {"endpoint", "access_key", "secret_key", "pid", "users", "roles"} on stdout, then
serves until its stdin closes (the test process ended) or it is terminated.
"""
import argparse
import json
import os
import sys

SETUP_REQUESTS = 3  # create_user, put_user_policy, create_access_key
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_REQUESTS)
os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")

import boto3  # noqa: E402
import moto.iam.access_control as access_control  # noqa: E402
from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # noqa: E402


def _verify_against_raw_target() -> None:
    """Check signatures against the request target as it was sent.

    moto rebuilds the canonical request from werkzeug's decoded URL, so a query value with an
    encoded '/' (prefix=host%2F, as aws-sdk-rust correctly sends it) fails the check although
    real S3 accepts it. SigV4 is defined on the encoded target, which the WSGI server keeps.
    """
    original = access_control.IAMRequestBase._create_aws_request

    def create(self):  # type: ignore[no-untyped-def]
        request = original(self)
        try:
            from flask import request as flask_request

            raw = flask_request.environ.get("RAW_URI") or flask_request.environ.get("REQUEST_URI")
        except RuntimeError:
            raw = None
        if raw:
            request.url = raw
        return request

    access_control.IAMRequestBase._create_aws_request = create


_verify_against_raw_target()


def _versioning_as_s3_sends_it() -> None:
    """Answer GetBucketVersioning with a <VersioningConfiguration> root, as S3 does; moto 5.2.5
    sends <GetBucketVersioningResponse>, which SDKs reject."""
    from moto.s3.responses import S3Response

    def get_bucket_versioning(self):  # type: ignore[no-untyped-def]
        status = self.backend.get_bucket_versioning(self.bucket_name)
        inner = f"<Status>{status}</Status>" if status else ""
        return 200, {}, (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"{inner}</VersioningConfiguration>"
        )

    S3Response.get_bucket_versioning = get_bucket_versioning


_versioning_as_s3_sends_it()


def _list_object_versions_as_s3_does() -> None:
    """ListObjectVersions with S3's marker semantics, in time proportional to the page.

    moto 5.2.5 deep-copies every version of the bucket (content included) on each call, which
    takes seconds and hundreds of MB for a bucket of 20,000 keys, and it drops the first key
    after a key-marker that is not itself a key. S3 lists the keys after the marker (or, with a
    version-id-marker, the versions after that one), rolling keys up into common prefixes.
    """
    import bisect
    import types

    from moto.s3.models import FakeKey, S3Backend
    from moto.s3.responses import S3Response

    def view(version, is_latest):  # type: ignore[no-untyped-def]
        fields = {
            "name": version.name,
            "version_id": version.version_id,
            "is_latest": is_latest,
            "last_modified_ISO8601": version.last_modified_ISO8601,
        }
        if isinstance(version, FakeKey):
            fields.update(etag=version.etag, size=version.size, storage_class=version.storage_class)
        return types.SimpleNamespace(**fields)

    def list_object_versions(  # type: ignore[no-untyped-def]
        self, bucket_name, delimiter=None, key_marker=None, max_keys=1000, prefix="",
        version_id_marker=None,
    ):
        bucket = self.get_bucket(bucket_name)
        prefix = prefix or ""
        max_keys = 1000 if max_keys is None else max_keys
        names = sorted(bucket.keys.keys())
        start = bisect.bisect_left(names, max(prefix, key_marker or ""))
        versions, prefixes, markers = [], [], []
        last = None
        next_marker = (None, None)
        for name in names[start:]:
            if not name.startswith(prefix):
                break
            if name == key_marker and not version_id_marker:
                continue
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if common == key_marker or (prefixes and prefixes[-1] == common):
                    continue
                if len(versions) + len(markers) + len(prefixes) >= max_keys:
                    next_marker = last
                    break
                prefixes.append(common)
                last = (common, None)
                continue
            stored = list(reversed(bucket.keys.getlist(name)))
            first = 0
            if name == key_marker:
                ids = [v.version_id for v in stored]
                first = ids.index(version_id_marker) + 1 if version_id_marker in ids else len(stored)
            full = False
            for i in range(first, len(stored)):
                if len(versions) + len(markers) + len(prefixes) >= max_keys:
                    full = True
                    break
                v = stored[i]
                (versions if isinstance(v, FakeKey) else markers).append(view(v, i == 0))
                last = (name, v.version_id)
            if full:
                next_marker = last
                break
        return versions, prefixes, markers, next_marker[0], next_marker[1]

    S3Backend.list_object_versions = list_object_versions

    def respond(self):  # type: ignore[no-untyped-def]
        """The ListVersionsResult XML, written directly: moto's generic serializer spends about
        0.1 s of its single core on each page of 1,000 versions."""
        from xml.sax.saxutils import escape

        q = self.querystring
        delimiter = q.get("delimiter", [None])[0]
        key_marker = q.get("key-marker", [None])[0]
        version_id_marker = q.get("version-id-marker", [None])[0]
        max_keys = int(q.get("max-keys", ["1000"])[0])
        prefix = self._get_querystring(self.request, self.uri).get("prefix", [""])[0]
        versions, prefixes, markers, next_key, next_version = self.backend.list_object_versions(
            self.bucket_name,
            delimiter=delimiter,
            key_marker=key_marker,
            max_keys=max_keys,
            prefix=prefix,
            version_id_marker=version_id_marker,
        )
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{escape(self.bucket_name)}</Name><Prefix>{escape(prefix)}</Prefix>",
            f"<KeyMarker>{escape(key_marker or '')}</KeyMarker>",
            f"<VersionIdMarker>{escape(version_id_marker or '')}</VersionIdMarker>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        out.append(f"<IsTruncated>{'true' if next_key is not None else 'false'}</IsTruncated>")
        if next_key is not None:
            out.append(f"<NextKeyMarker>{escape(next_key)}</NextKeyMarker>")
            if next_version:
                out.append(f"<NextVersionIdMarker>{escape(next_version)}</NextVersionIdMarker>")
        latest = lambda v: "true" if v.is_latest else "false"  # noqa: E731
        for v in versions:
            out.append(
                f"<Version><Key>{escape(v.name)}</Key><VersionId>{v.version_id or 'null'}</VersionId>"
                f"<IsLatest>{latest(v)}</IsLatest><LastModified>{v.last_modified_ISO8601}</LastModified>"
                f"<ETag>{escape(v.etag)}</ETag><Size>{v.size}</Size>"
                f"<StorageClass>{v.storage_class}</StorageClass></Version>"
            )
        for m in markers:
            out.append(
                f"<DeleteMarker><Key>{escape(m.name)}</Key><VersionId>{m.version_id or 'null'}</VersionId>"
                f"<IsLatest>{latest(m)}</IsLatest><LastModified>{m.last_modified_ISO8601}</LastModified>"
                "</DeleteMarker>"
            )
        for p in prefixes:
            out.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
        out.append("</ListVersionsResult>")
        return 200, {"Content-Type": "application/xml"}, "".join(out)

    S3Response.list_object_versions = respond


_list_object_versions_as_s3_does()


def _uploads_stamped_when_initiated() -> None:
    """Answer ListMultipartUploads with each upload's real initiation time, as S3 does; moto
    5.2.5 sends the fixed date 2010-11-10 for every upload, which makes a live upload look
    years old to anything that measures an upload's age (s3nap's debris grace period)."""
    import datetime
    import re

    from moto.s3.models import FakeMultipart
    from moto.s3.responses import S3Response

    fixed = "2010-11-10T20:48:33.000Z"
    original_init = FakeMultipart.__init__
    original_list = S3Response.list_multipart_uploads

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, **kwargs)
        self.s3nap_initiated = datetime.datetime.now(datetime.timezone.utc)

    def list_multipart_uploads(self):  # type: ignore[no-untyped-def]
        status, headers, body = original_list(self)
        uploads = self.backend.list_multipart_uploads(self.bucket_name).values()
        stamps = {
            u.id: u.s3nap_initiated.strftime("%Y-%m-%dT%H:%M:%S.000Z")
            for u in uploads
            if hasattr(u, "s3nap_initiated")
        }

        def stamp(match):  # type: ignore[no-untyped-def]
            block = match.group(0)
            found = re.search(r"<UploadId>([^<]*)</UploadId>", block)
            when = stamps.get(found.group(1)) if found else None
            return block.replace(fixed, when) if when else block

        text = body.decode() if isinstance(body, bytes) else body
        text = re.sub(r"<Upload>.*?</Upload>", stamp, text, flags=re.S)
        return status, headers, text.encode() if isinstance(body, bytes) else text

    FakeMultipart.__init__ = init
    S3Response.list_multipart_uploads = list_multipart_uploads


_uploads_stamped_when_initiated()


def _content_md5_checked_as_s3_does() -> None:
    """Refuse a PutObject or UploadPart whose body does not match its Content-MD5 with S3's
    400 BadDigest, or the SHA-256 its signature covers (`x-amz-content-sha256`, when it is a
    hash) with S3's 400 XAmzContentSHA256Mismatch; moto 5.2.5 stores the bytes whatever the
    headers say, so a byte damaged on the way (scripts/fault-proxy.py's corrupt_body) would
    be stored."""
    import base64
    import hashlib

    from moto.s3.responses import S3Response

    original = S3Response._key_response_put

    def put(self, query, key_name):  # type: ignore[no-untyped-def]
        given = self.headers.get("Content-MD5")
        body = self.body if isinstance(self.body, bytes) else (self.body or "").encode()
        if given and base64.b64encode(hashlib.md5(body).digest()).decode() != given:
            return (
                400,
                {"Content-Type": "application/xml"},
                "<Error><Code>BadDigest</Code><Message>The Content-MD5 you specified did "
                "not match what we received.</Message></Error>",
            )
        signed = self.headers.get("x-amz-content-sha256", "")
        if len(signed) == 64 and hashlib.sha256(body).hexdigest() != signed.lower():
            return (
                400,
                {"Content-Type": "application/xml"},
                "<Error><Code>XAmzContentSHA256Mismatch</Code><Message>The provided "
                "'x-amz-content-sha256' header does not match what was computed."
                "</Message></Error>",
            )
        return original(self, query, key_name)

    S3Response._key_response_put = put


_content_md5_checked_as_s3_does()


# Role ARN → the ExternalId its trust policy would demand (`--role NAME=POLICY,ID`).
EXTERNAL_IDS: dict = {}


def _external_ids_checked_as_sts_does() -> None:
    """Refuse an AssumeRole whose ExternalId differs from the one the role demands, with STS's
    AccessDenied. On AWS that is a trust policy's Condition on sts:ExternalId, but moto's IAM
    never matches a statement with a condition (the role could not be assumed at all), so the
    demanded id is kept here and the trust policy has no condition."""
    from moto.sts.exceptions import STSClientError
    from moto.sts.models import STSBackend

    original = STSBackend.assume_role

    def assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id):  # type: ignore[no-untyped-def]
        wanted = EXTERNAL_IDS.get(role_arn)
        if wanted is not None and wanted != external_id:
            raise STSClientError(
                "AccessDenied",
                f"User is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
            )
        return original(
            self, region_name, role_session_name, role_arn, policy, duration, external_id
        )

    STSBackend.assume_role = assume_role


_external_ids_checked_as_sts_does()


def _web_identity_unsigned_as_sts_takes_it() -> None:
    """Let AssumeRoleWithWebIdentity through unsigned, as STS does (the web identity token is
    the caller's proof); with INITIAL_NO_AUTH_ACTION_COUNT moto demands a signature on every
    request. The token itself is not checked (moto does not)."""
    from moto.core.responses import BaseResponse

    original = BaseResponse._authenticate_and_authorize_normal_action

    def authenticate(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self._get_action() == "AssumeRoleWithWebIdentity":
            return None
        return original(self, *args, **kwargs)

    BaseResponse._authenticate_and_authorize_normal_action = authenticate


_web_identity_unsigned_as_sts_takes_it()


def _populate_listing_bench(versions: int) -> None:
    """Two versions per key, written straight into moto's backend (HTTP PUTs of 100,000 versions
    would take minutes): 80 % of the keys in one flat prefix, the rest three levels deep."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket("listing-bench", "us-east-1")
    backend.put_bucket_versioning("listing-bench", "Enabled")
    keys = versions // 2
    for i in range(keys):
        if i % 5 == 4:
            key = f"tree/d{i % 7}/e{i % 11}/f{i:07d}"
        else:
            key = f"flat/k{i:07d}"
        for v in range(2):
            backend.put_object("listing-bench", key, f"{key} v{v}".encode())


def _delay_listings(seconds: float) -> None:
    import time

    from moto.s3.responses import S3Response

    original = S3Response.list_object_versions

    def list_object_versions(self):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return original(self)

    S3Response.list_object_versions = list_object_versions


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--credentials-file", help="also write key=/secret= here (s3napback format)")
    parser.add_argument(
        "--bench-versions",
        type=int,
        default=0,
        help="create the versioned bucket 'listing-bench' holding this many versions (benchmarks)",
    )
    parser.add_argument(
        "--list-latency-ms",
        type=float,
        default=0,
        help="answer each ListObjectVersions this much later, as a distant S3 region would",
    )
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="NAME=POLICY.json[,EXTERNAL_ID]",
        help="also create IAM role NAME (anyone may assume it; with EXTERNAL_ID, only with that "
        "ExternalId) allowed only what the policy document in the file allows",
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME=POLICY.json",
        help="also create IAM user NAME allowed only what the policy document in the file allows",
    )
    args = parser.parse_args()
    if args.bench_versions:
        _populate_listing_bench(args.bench_versions)
    if args.list_latency_ms:
        _delay_listings(args.list_latency_ms / 1000)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="s3nap-test")
    iam.put_user_policy(
        UserName="s3nap-test",
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="s3nap-test")["AccessKey"]
    users = {}
    roles = {}
    if args.user or args.role:
        signed = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        for spec in args.user:
            name, _, policy_file = spec.partition("=")
            with open(policy_file) as f:
                document = f.read()
            signed.create_user(UserName=name)
            signed.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=document)
            made = signed.create_access_key(UserName=name)["AccessKey"]
            users[name] = {"access_key": made["AccessKeyId"], "secret_key": made["SecretAccessKey"]}
        for spec in args.role:
            name, _, rest = spec.partition("=")
            policy_file, _, external_id = rest.partition(",")
            with open(policy_file) as f:
                document = f.read()
            statement = {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"],
            }
            made = signed.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [statement]}
                ),
            )["Role"]
            signed.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=document)
            roles[name] = made["Arn"]
            if external_id:
                EXTERNAL_IDS[made["Arn"]] = external_id
    if args.credentials_file:
        with open(args.credentials_file, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(f"key={key['AccessKeyId']}\nsecret={key['SecretAccessKey']}\n")
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "access_key": key["AccessKeyId"],
                "secret_key": key["SecretAccessKey"],
                "pid": os.getpid(),
                "users": users,
                "roles": roles,
            }
        ),
        flush=True,
    )
    # Serve until the parent goes away.
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
