"""Client-side tooling: the `stepwise` CLI and the local stack. Never deployed to Lambda."""
