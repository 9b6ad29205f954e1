"""ResultStore on S3: whole tool results too large for the table, one object per call under its tenant's prefix.

The bucket is encrypted, private and TLS-only, and expires objects (infra/constructs/results.py); a result read
after its expiry is reported as no longer kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


class S3ResultStore:
    def __init__(self, bucket: str, client: S3Client) -> None:
        self.bucket, self.client = bucket, client

    def put(self, key: str, content: str) -> None:
        # a retried invocation writes the same bytes again: a put is safe to repeat
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=content.encode(), ContentType="text/plain; charset=utf-8"
        )

    def get(self, key: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return bytes(body).decode()
