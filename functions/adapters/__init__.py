"""Adapters: the only code that talks to AWS or a model provider."""
