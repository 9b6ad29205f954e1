"""A deployer's tool that returns a 100 KB report: what long-conversation tests and benches make the model read."""

from __future__ import annotations

from pydantic import BaseModel, Field

from functions.tools import tool

REPORT_CHARS = 100_000


class ReportInput(BaseModel):
    n: int = Field(ge=0)


@tool(idempotent=True)
def big_report(arguments: ReportInput) -> str:
    """A 100 KB report (a deployer's tool that reads a large document)."""
    line = f"report {arguments.n}: lorem ipsum dolor sit amet, consectetur adipiscing elit. "
    return (line * (REPORT_CHARS // len(line) + 1))[:REPORT_CHARS]
