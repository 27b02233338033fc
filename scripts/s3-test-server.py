#!/usr/bin/env python3
"""Start moto's S3 server on 127.0.0.1 with SigV4 enforced, for s3nap's tests.

moto accepts any credentials unless INITIAL_NO_AUTH_ACTION_COUNT is set: then only the first
N requests go unauthenticated. We spend exactly those on creating an IAM user with an access
key, so every later request must be signed with that key (a wrong secret is refused, as on S3).

Prints one JSON line {"endpoint", "access_key", "secret_key", "pid"} on stdout, then serves
until its stdin closes (the test process ended) or it is terminated.
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--credentials-file", help="also write key=/secret= here (s3napback format)")
    args = parser.parse_args()

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
