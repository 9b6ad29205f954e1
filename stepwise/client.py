"""HTTP client of the Stepwise API: the local stack or a deployed endpoint, with a tenant's API key."""

from __future__ import annotations

import json
import os
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


class _Refuse(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is answered as the error it is; the API key is never sent elsewhere


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


class StepwiseClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 30.0, api_key: str | None = None) -> None:
        """``api_key`` (default: env STEPWISE_API_KEY): a tenant's key, sent as ``Authorization: Bearer``."""
        self.endpoint = endpoint.rstrip("/")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        self.timeout = timeout
        self.api_key = api_key if api_key is not None else os.environ.get("STEPWISE_API_KEY") or None

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json", **(headers or {})}
        url = self.endpoint + path
        if self.api_key:
            all_headers["authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
        try:
            with _NO_REDIRECTS.open(request, timeout=self.timeout) as response:  # the key never follows a redirect
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


def deployment_table(args: Any) -> tuple[str, Any, Any] | None:
    """An operator command's ``--table`` (the deployment's, written with your AWS credentials): its name, a
    DynamoDB client and the clock; None for the local stack (its operator routes)."""
    if not getattr(args, "table", None):
        return None
    import boto3

    from functions.adapters.aws import SystemClock

    return args.table, boto3.client("dynamodb"), SystemClock()
