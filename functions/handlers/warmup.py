"""A function's first request's preparation, done in its init on Lambda.

On demand, Lambda runs a function's init on a full vCPU (for up to 10 s) and its invocations on the share of a vCPU
its memory buys (1,769 MB buy one; 256 MB, most functions', about a seventh): what the first request would
build anyway (settings, AWS clients, the models it validates, the modules the use cases import) costs that request
several times less wall time when the init builds it. The init's own work is not what a client waits on less: a cold
request waits on both (README "Cold starts").

``prepare`` runs a handler's preparation in such an init only: not in tests, the local stack or a script (no
``AWS_LAMBDA_INITIALIZATION_TYPE``), and not in a SnapStart init (a snapshot would keep the clients built before it).
It makes no AWS call (X-Ray has no segment in the init). If it fails, the first request builds it all again and fails
as it would have: the init logs a warning and goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from aws_lambda_powertools import Logger

# the inits ``prepare`` runs in: on demand (the init has a full vCPU), and provisioned concurrency (ahead of requests)
PREPARED_INITS = ("on-demand", "provisioned-concurrency")


def initialization() -> str | None:
    """How Lambda started this environment (``on-demand``, ``provisioned-concurrency``, ``snap-start``), or None
    outside Lambda."""
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")


def prepare(preparation: Callable[[], object], logger: Logger) -> bool:
    """Run ``preparation`` if this is a Lambda init it helps; True if it ran and succeeded."""
    if initialization() not in PREPARED_INITS:
        return False
    try:
        preparation()
    except Exception:  # the first request does it again, and answers with the error as it would have
        logger.warning("the init could not prepare the first request; it will", exc_info=True)
        return False
    return True
