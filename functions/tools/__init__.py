"""Tools an agent may call: the ``Toolbox`` the core's ports name. Pure Python: no AWS, no model provider.

The tools package depends on the core's models and errors; the core never imports it (wiring hands the
registry to the use cases)."""

from functions.agent.errors import UnknownToolError
from functions.tools.builtins import builtin_registry
from functions.tools.registry import Tool, ToolInputError, ToolRegistry, tool

__all__ = ["Tool", "ToolInputError", "ToolRegistry", "UnknownToolError", "builtin_registry", "tool"]
