#!/usr/bin/env python3
"""Baseline upload client for benchmarks: stdin → S3 multipart upload (boto3's s3transfer, the
engine behind `aws s3 cp - s3://…`). Usage: upload-stdin.py ENDPOINT KEYFILE BUCKET KEY"""
import sys

import boto3
from boto3.s3.transfer import TransferConfig

endpoint, keyfile, bucket, key = sys.argv[1:5]
creds = dict(line.strip().split("=", 1) for line in open(keyfile) if "=" in line)
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=creds["key"],
    aws_secret_access_key=creds["secret"],
)
s3.upload_fileobj(
    sys.stdin.buffer,
    bucket,
    key,
    Config=TransferConfig(multipart_chunksize=16 << 20, max_concurrency=4),
)
