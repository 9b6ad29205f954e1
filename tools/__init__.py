"""The deployer's own tools: every ``@tool`` function in a module of this package joins the built-in toolset.

Write a function that takes one pydantic model and returns text, decorate it, and it is packaged into the tool
function on ``cdk synth`` (no Docker) and offered to agents as part of ``stepwise_toolset_20261201``::

    from pydantic import BaseModel, Field

    from functions.tools import tool


    class LookupInput(BaseModel):
        order_id: str = Field(description="the order's id, e.g. A-1001")


    @tool(idempotent=True, timeout_seconds=5)
    def lookup_order(arguments: LookupInput) -> str:
        \"\"\"Look up an order's status.\"\"\"
        return ...

``idempotent=False`` marks a tool with side effects: it is never run twice for one call (a crash mid-call gives
the model "outcome unknown" instead). Raise ``ToolInputError`` to refuse an input with a message for the model.
Test it like the built-ins (tests/unit/test_http_fetch.py). Its runtime dependencies go in requirements.txt.
"""
