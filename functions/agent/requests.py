"""Parsing a request body into a pydantic model, with a 400 message that names each problem. Pure."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from functions.agent.errors import MAX_MESSAGE, RequestRejectedError, clip

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A request model: unknown fields are refused by name; built on first use, not at cold start."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


def problems(exc: ValidationError) -> str:
    """Every problem pydantic found, each with the path of the field it is about."""
    found = "; ".join(
        f"{'.'.join(clip(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors(include_url=False)
    )
    return clip(found, MAX_MESSAGE)


def parse(model: type[M], raw: Any) -> M:
    """Raises RequestRejectedError naming the problems."""
    if not isinstance(raw, dict):
        raise RequestRejectedError("request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RequestRejectedError(problems(exc)) from exc
