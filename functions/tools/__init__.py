"""Tools an agent may call. Pure Python: no AWS, no model provider."""

from functions.tools.builtins import builtin_registry
from functions.tools.registry import Tool, ToolInputError, ToolRegistry, UnknownToolError

__all__ = ["Tool", "ToolInputError", "ToolRegistry", "UnknownToolError", "builtin_registry"]
