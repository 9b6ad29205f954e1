"""ModelClient on Amazon Bedrock's Converse API (boto3 bedrock-runtime), for Claude models on Bedrock.

Maps the Messages-API shaped request and response the core uses to Converse and back: text, tool use and
tool results, the system prompt, tool schemas, and prompt-cache breakpoints (``cache_control`` becomes a
``cachePoint`` block after the marked one). boto3's own retries are off: Step Functions owns retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from functions.agent.errors import FatalModelError, RetryableModelError
from functions.agent.models import ModelRequest, ModelResponse, Usage

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
else:
    BedrockRuntimeClient = Any

PROVIDER = "bedrock"
_RETRYABLE = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "ServiceQuotaExceededException",
    "ModelErrorException",  # the model failed to process the request (424): transient
}
_KINDS = {"ThrottlingException": "throttled", "ServiceUnavailableException": "overloaded"}  # else server_error
_FATAL_STATUS = {"ValidationException": 400, "AccessDeniedException": 403, "ResourceNotFoundException": 404}
_STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
}
CACHE_POINT = {"cachePoint": {"type": "default"}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Messages-API content -> Converse content blocks."""
    if isinstance(content, str):
        return [{"text": content}]
    converted: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            converted.append({"text": block["text"]})
        elif kind == "tool_use":
            converted.append(
                {"toolUse": {"toolUseId": block["id"], "name": block["name"], "input": block.get("input") or {}}}
            )
        elif kind == "tool_result":
            result = block.get("content", "")
            parts = [{"text": result}] if isinstance(result, str) else [{"text": p.get("text", "")} for p in result]
            converted.append(
                {
                    "toolResult": {
                        "toolUseId": block["tool_use_id"],
                        "content": parts,
                        "status": "error" if block.get("is_error") else "success",
                    }
                }
            )
        else:
            continue  # thinking and other block kinds have no Converse equivalent here
        if block.get("cache_control"):
            converted.append(CACHE_POINT)
    return converted


def to_converse(request: ModelRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "modelId": request.model,
        "messages": [{"role": m["role"], "content": _blocks(m["content"])} for m in request.messages],
        "inferenceConfig": {"maxTokens": request.max_tokens},
    }
    if request.system:
        kwargs["system"] = _blocks(request.system)
    if request.tools:
        tools: list[dict[str, Any]] = []
        for tool in request.tools:
            spec = {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "inputSchema": {"json": tool["input_schema"]},
            }
            tools.append({"toolSpec": spec})
            if tool.get("cache_control"):
                tools.append(CACHE_POINT)
        kwargs["toolConfig"] = {"tools": tools}
    return kwargs


def from_converse(model: str, answer: dict[str, Any]) -> ModelResponse:
    content: list[dict[str, Any]] = []
    for block in answer["output"]["message"]["content"]:
        if "text" in block:
            content.append({"type": "text", "text": block["text"]})
        elif "toolUse" in block:
            use = block["toolUse"]
            content.append(
                {"type": "tool_use", "id": use["toolUseId"], "name": use["name"], "input": use.get("input") or {}}
            )
    usage = answer.get("usage", {})
    return ModelResponse(
        content=content,
        stop_reason=_STOP_REASONS.get(answer.get("stopReason", ""), answer.get("stopReason")),
        usage=Usage(
            input_tokens=usage.get("inputTokens", 0),
            output_tokens=usage.get("outputTokens", 0),
            cache_read_input_tokens=usage.get("cacheReadInputTokens", 0),
            cache_creation_input_tokens=usage.get("cacheWriteInputTokens", 0),
        ),
        model=model,
        provider=PROVIDER,
    )


class BedrockModel:
    provider = PROVIDER

    def __init__(self, client: BedrockRuntimeClient) -> None:
        self.client = client

    def create(self, request: ModelRequest) -> ModelResponse:
        try:
            answer = self.client.converse(**to_converse(request))
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            message = exc.response["Error"].get("Message", "")
            http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _RETRYABLE or http_status == 429 or http_status >= 500:
                kind = _KINDS.get(code) or ("throttled" if http_status == 429 else "server_error")
                raise RetryableModelError(f"Bedrock {code} ({http_status}): {message}", kind=kind) from exc
            status = _FATAL_STATUS.get(code, http_status or 400)
            raise FatalModelError(f"MODEL_{status}", f"Bedrock {code}: {message}") from exc
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
            raise RetryableModelError(f"connection to Bedrock failed: {exc}", kind="connection") from exc
        except BotoCoreError as exc:
            raise RetryableModelError(f"Bedrock call failed: {exc}", kind="connection") from exc
        try:
            return from_converse(request.model, answer)
        except (KeyError, TypeError, ValueError) as exc:  # ValueError includes pydantic's ValidationError
            raise RetryableModelError(f"Bedrock returned a malformed response: {exc}", kind="malformed") from exc


class ProviderModels:
    """One ModelClient over several providers: each call goes to the provider its model id is priced under."""

    provider = "by-model"

    def __init__(self, provider_of: Any, clients: dict[str, Any]) -> None:
        self.provider_of = provider_of
        self.clients = clients

    def create(self, request: ModelRequest) -> ModelResponse:
        provider = self.provider_of(request.model)
        client = self.clients.get(provider)
        if client is None:
            raise FatalModelError("PROVIDER_DISABLED", f"{request.model} is served by {provider}, not enabled here")
        response: ModelResponse = client.create(request)
        return response
