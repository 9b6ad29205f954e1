"""The local stack under a burst: 300 clients connecting at once are all accepted and answered (the API server's
listen backlog holds them; http.server's default of 5 reset most). Counts only: times are bench/local_load.py's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stepwise.local.stack import LocalStack
from tests.fakes.load import submit

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def queued_only(template: dict[str, Any]) -> Iterator[LocalStack]:
    """The API alone (accepted runs stay queued): the burst is the submissions, not 300 runs' work."""
    with LocalStack(port=0, template=template, intake=False) as local:
        yield local


def test_300_concurrent_submissions_are_all_accepted_none_reset(queued_only: LocalStack) -> None:
    answers, run_ids = submit(queued_only, 300)
    assert answers == {"202": 300}
    assert len(set(run_ids)) == 300
    attributes = queued_only.sqs.get_queue_attributes(
        QueueUrl=queued_only.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "300"
