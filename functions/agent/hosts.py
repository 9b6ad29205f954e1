"""Which hosts a deployment's allow-list admits: exact names, or ``*.domain`` for any subdomain. Pure.

One rule for every allow-list: the tools' (functions/tools/egress.py) and the webhooks' (functions/agent/webhooks.py).
"""

from __future__ import annotations

from collections.abc import Iterable


def host_allowed(host: str, hosts: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for allowed in hosts:
        allowed = allowed.lower().rstrip(".")
        if allowed.startswith("*."):
            if host.endswith(allowed[1:]) and host != allowed[2:]:
                return True
        elif host == allowed:
            return True
    return False
