"""``GET /_local/doctor``: the doctor's checks (functions/agent/doctor.py) run inside the local stack's process.

moto serves the local stack's AWS services in its own process (``mock_aws``), out of reach of another one, so
`stepwise doctor` asks the stack to examine itself: the same use case and the same AWS reads as against a
deployment, on the stack's own resources. Its queues are whatever it created (ListQueues: moto holds nothing
else); it has no CloudWatch alarms and no execution-ended dead-letter queue (EventBridge is not emulated).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepwise.local.stack import LocalStack


def report(stack: LocalStack) -> dict[str, Any]:
    import boto3

    from functions.adapters.aws import SystemClock
    from functions.adapters.aws_doctor import DoctorSettings, build_doctor, settings_target
    from functions.agent.doctor import QueueRef
    from stepwise.local.template import REGION

    settings = DoctorSettings.model_validate(dict(os.environ))  # the functions' settings, as the stack gave them
    session = boto3.session.Session(region_name=REGION)
    urls = sorted(session.client("sqs").list_queues().get("QueueUrls", []))
    target = settings_target(
        settings,
        description=f"local stack {stack.url}",
        region=REGION,
        local=True,
        api_url=stack.url,
        state_machine_arn=stack.state_machine_arn,
        queues=[QueueRef(url=url) for url in urls],
        alarm_names=None,
    )
    return build_doctor(session, settings.table_name, SystemClock()).examine(target).model_dump(mode="json")
