"""The index of active work: which runs and session turns can still be stopped, listed without a scan. Pure.

A run (or a session whose turn is queued or running) is listed exactly while its status is not terminal
(``TERMINAL_STATUSES``): the write that creates it or starts a session's turn lists it, and the write that ends
it (whatever ends it: its last step, Finalize, MarkFailed, the workflow's end, the watchdog, a cancel, a budget,
a turn that idles) removes its listing in the same atomic write, so a listing can never outlive its run by a
lost second write. The ledger's plans say so (``RunChange.listing`` and ``RunChange.delists``) and both stores
apply them; tests/functional/test_ledger_parity.py holds the stores to it.

Where an entry lives: ``ACTIVE_SHARDS`` shards, a tenant always in the same one (``shard_of``), and within a
shard the key ``{tenant}#{since}#{run_id}``: a tenant's active work is one range of one shard (one Query), oldest
first, and everyone's is ``ACTIVE_SHARDS`` Queries. ``since`` is when the work became active: a run's creation,
a session turn's start.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.agent.errors import RequestRejectedError
from functions.agent.models import Run, RunKey, RunStatus

if TYPE_CHECKING:
    from functions.agent.ports import ActiveRuns

# Fixed for the life of a table: an entry keeps the shard it was written to (changing this needs a re-listing).
ACTIVE_SHARDS = 16
MAX_PAGE = 100
MAX_KEY = 256  # characters of an entry's key: a tenant (64), a timestamp (29) and an id (about 30), with room
BY_TENANT = "cancelled by the tenant's kill switch"  # the reason a stopped run's error (and a turn's cancel) carries
BY_OPERATOR = "cancelled by an operator's kill switch"


def shard_of(tenant: str) -> int:
    """The tenant's shard: stable across processes and versions (CRC-32 of its name)."""
    return zlib.crc32(tenant.encode()) % ACTIVE_SHARDS


@dataclass(frozen=True)
class Listing:
    """A run's place in the index while it is active."""

    shard: int
    key: str  # "{tenant}#{since}#{run_id}" (none of the three contains "#")

    @property
    def partition(self) -> str:
        return partition(self.shard)


def partition(shard: int) -> str:
    return f"ACTIVE#{shard:02d}"


def place(run: Run) -> Listing:
    """Where the run is listed while it is active (a session: for its current turn)."""
    since = run.turns[-1].started_at if run.turns else run.created_at
    return Listing(shard_of(run.tenant), f"{run.tenant}#{since}#{run.run_id}")


def listing(run: Run) -> Listing | None:
    """The rule: the run is listed exactly while its status is not terminal."""
    return None if run.status.terminal else place(run)


@dataclass(frozen=True)
class ActiveEntry:
    """One listed run or session, as the index holds it (its key and the few attributes it carries)."""

    tenant: str
    run_id: str
    since: str
    status: RunStatus
    turn: int = 0  # a session's turn (1 or more); 0 for a /runs run
    created_by: str | None = None

    @classmethod
    def parse(cls, key: str, status: RunStatus, turn: int = 0, created_by: str | None = None) -> ActiveEntry:
        tenant, since, run_id = key.split("#")
        return cls(tenant, run_id, since, status, turn, created_by)

    @property
    def run_key(self) -> RunKey:
        return RunKey(self.tenant, self.run_id)

    @property
    def key(self) -> str:
        return f"{self.tenant}#{self.since}#{self.run_id}"

    @property
    def kind(self) -> str:
        """``session`` or ``run`` (a session is active only in a turn, and turns count from 1)."""
        return "session" if self.turn else "run"

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.run_id, "type": self.kind, "tenant": self.tenant, "status": self.status.value,
            "since": self.since, "created_by": self.created_by,
        }  # fmt: skip
        if self.turn:
            body["turn"] = self.turn
        return body


# ------------------------------------------------------------------------------------------- pages


def page_token(shard: int, key: str) -> str:
    """An opaque cursor: the shard and the key of the last entry returned."""
    return base64.urlsafe_b64encode(f"{shard}|{key}".encode()).decode().rstrip("=")


def read_page(token: str | None, tenant: str | None) -> tuple[int, str | None]:
    """The shard and the key to continue after (the first shard and None without a token).

    Raises:
        RequestRejectedError: the token is not one this list returned (for a tenant: of its own shard and work).
    """
    if token is None:
        return (shard_of(tenant) if tenant is not None else 0), None
    try:
        shard_text, key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split("|", 1)
        shard = int(shard_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise RequestRejectedError("page: not a next_page of this list") from None
    wrong_tenant = tenant is not None and (shard != shard_of(tenant) or not key.startswith(f"{tenant}#"))
    # (a key longer than any this list writes would reach the table as a start key DynamoDB refuses: a 5xx)
    if not 0 <= shard < ACTIVE_SHARDS or key.count("#") != 2 or len(key) > MAX_KEY or wrong_tenant:
        raise RequestRejectedError("page: not a next_page of this list")
    return shard, key


def active_page(
    store: ActiveRuns, tenant: str | None, *, limit: int = MAX_PAGE, page: str | None = None
) -> tuple[list[ActiveEntry], str | None]:
    """A page of active runs and sessions: a tenant's (one Query of its shard), or everyone's (shard by shard),
    oldest first within a tenant; the cursor of the next page, if there may be one.

    Raises:
        RequestRejectedError: ``page`` is not a next_page of this list.
    """
    shard, after = read_page(page, tenant)
    last = shard if tenant is not None else ACTIVE_SHARDS - 1
    found: list[ActiveEntry] = []
    while len(found) <= limit and shard <= last:  # one more than asked: whether there is a next page
        wanted = limit + 1 - len(found)
        batch = store.list_active(shard, tenant=tenant, limit=wanted, after=after)
        # an entry whose run has ended is one an earlier release left (it ended runs without unlisting them, while
        # a deploy rolled out or back): nothing to stop, so not listed
        found += [entry for entry in batch if not entry.status.terminal]
        shard, after = (shard + 1, None) if len(batch) < wanted else (shard, batch[-1].key)
    chosen = found[:limit]
    return chosen, (entry_token(chosen[-1]) if len(found) > limit else None)


def entry_token(entry: ActiveEntry) -> str:
    """The cursor that continues after ``entry``."""
    return page_token(shard_of(entry.tenant), entry.key)
