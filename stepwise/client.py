"""HTTP client of the Stepwise API: the local stack or a deployed endpoint (SigV4-signed for AWS)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "http://127.0.0.1:8787"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED", "TIMED_OUT"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class StepwiseClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        self.timeout = timeout
        host = urlsplit(self.endpoint).hostname or ""
        # A deployed API uses IAM auth: sign with the caller's AWS credentials (botocore's standard chain).
        self.sign = host.endswith(".amazonaws.com")

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json", **(headers or {})}
        url = self.endpoint + path
        if self.sign:
            all_headers = _sigv4_headers(method, url, data, all_headers)
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                error = json.loads(payload).get("error") or {}
            except ValueError:
                error = {}
            code = error.get("code") or error.get("type") or "HTTP_ERROR"  # /runs or /v1 (Anthropic-shaped) errors
            raise ApiError(exc.code, code, error.get("message", payload.decode()[:500])) from None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Any route (the /v1 Managed Agents API)."""
        return self._request(method, path, body)

    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/health"))

    def create_run(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return dict(self._request("POST", "/runs", body, headers))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/runs/{run_id}"))

    def get_steps(self, run_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/runs/{run_id}/steps"))

    def costs(self, first: str | None = None, last: str | None = None) -> dict[str, Any]:
        query = "&".join(f"{key}={value}" for key, value in (("from", first), ("to", last)) if value)
        return dict(self._request("GET", "/costs" + (f"?{query}" if query else "")))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/runs/{run_id}/cancel"))


def _sigv4_headers(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import Session

    session = Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ApiError(0, "NO_CREDENTIALS", "the deployed API uses IAM auth: configure AWS credentials")
    host = urlsplit(url).hostname or ""
    region = host.split(".")[2] if host.count(".") >= 4 else (session.get_config_variable("region") or "us-east-1")
    aws_request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(aws_request)
    return dict(aws_request.headers.items())
