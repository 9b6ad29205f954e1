"""Thin Lambda handlers: parse the event, call one use case of the core, return a small result."""
