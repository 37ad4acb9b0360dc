"""Drives a running Docket through a client that openapi-python-client generated from its own
OpenAPI document: sign in, create and page tasks, change one, preview a schedule, submit and read
a case, and read a refusal. Run by tests/api/contract.rs with the generated package on PYTHONPATH
and DOCKET_URL, DOCKET_EMAIL and DOCKET_PASSWORD set; any assertion failing exits non-zero."""

import datetime
import os

from docket_client import AuthenticatedClient, Client
from docket_client.api.auth import get_current_user, sign_in
from docket_client.api.cases import create_case, get_case
from docket_client.api.tasks import create_task, list_tasks, preview_schedule, update_task
from docket_client.models import (
    Case,
    CaseDetail,
    CreateTask,
    ErrorBody,
    LoginRequest,
    NewCase,
    PageTask,
    PipelineStep,
    PipelineStepOnError,
    PipelineStepWith,
    PreviewSchedule,
    SchedulePreview,
    Task,
    TaskPayload,
    TokenPair,
    UpdateTask,
)

url = os.environ["DOCKET_URL"]

# Sign-in is public: the client without a token takes it.
tokens = sign_in.sync(
    client=Client(base_url=url),
    body=LoginRequest(email=os.environ["DOCKET_EMAIL"], password=os.environ["DOCKET_PASSWORD"]),
)
assert isinstance(tokens, TokenPair), tokens
client = AuthenticatedClient(base_url=url, token=tokens.access_token, raise_on_unexpected_status=True)
me = get_current_user.sync(client=client)
assert me.user.email == os.environ["DOCKET_EMAIL"], me

# Tasks without a payload (it is optional), then paged two at a time.
created = []
for title in ["Morning report", "Noon report", "Evening report"]:
    task = create_task.sync(
        client=client,
        body=CreateTask(title=title, schedule_kind="cron", schedule_expr="0 8 * * 1-5", timezone="Europe/Chisinau"),
    )
    assert isinstance(task, Task), task
    assert len(task.next_fire_times) == 5, task
    assert all(isinstance(t, datetime.datetime) for t in task.next_fire_times), task
    created.append(task)
first = list_tasks.sync(client=client, limit=2)
assert isinstance(first, PageTask), first
assert len(first.items) == 2 and isinstance(first.next_cursor, str), first
second = list_tasks.sync(client=client, limit=2, cursor=first.next_cursor)
assert len(second.items) == 1 and second.next_cursor is None, second
assert sorted(t.title for t in first.items + second.items) == sorted(t.title for t in created)

# A task with a pipeline, built from the declared payload and step models.
announce = PipelineStep(
    id="announce",
    uses="events.publish",
    with_=PipelineStepWith.from_dict({"topic": "reports.ready", "payload": {"report": "${params.report}"}}),
    on_error=PipelineStepOnError.CONTINUE,
    retry=2,
)
piped = create_task.sync(
    client=client,
    body=CreateTask(
        title="Announce the report",
        schedule_kind="manual",
        payload=TaskPayload(pipeline=[announce], params=TaskPayload.from_dict({"params": {"report": "q4"}}).params),
    ),
)
assert isinstance(piped, Task), piped
assert isinstance(piped.payload, TaskPayload), piped
step = piped.payload.pipeline[0]
assert (step.id, step.uses, step.on_error, step.retry) == ("announce", "events.publish", PipelineStepOnError.CONTINUE, 2), step
assert piped.payload.params.to_dict() == {"report": "q4"}, piped.payload
created.append(piped)
first = list_tasks.sync(client=client, limit=2)
second = list_tasks.sync(client=client, limit=2, cursor=first.next_cursor)
assert len(second.items) == 2 and second.next_cursor is None, second

# A change without a payload keeps the task's own.
renamed = update_task.sync(client=client, id=created[0].id, body=UpdateTask(title="Morning brief"))
assert isinstance(renamed, Task) and renamed.title == "Morning brief", renamed
assert renamed.payload.to_dict() == created[0].payload.to_dict(), renamed

# A window around Santiago's midnight DST change.
preview = preview_schedule.sync(
    client=client,
    body=PreviewSchedule(
        schedule_kind="rrule",
        schedule_expr="FREQ=DAILY;BYHOUR=0;BYMINUTE=15;BYSECOND=0",
        timezone="America/Santiago",
        after=datetime.datetime(2027, 9, 4, 12, tzinfo=datetime.timezone.utc),
        count=2,
    ),
)
assert isinstance(preview, SchedulePreview), preview
assert [t.isoformat() for t in preview.next_fire_times] == [
    "2027-09-05T04:15:00+00:00",
    "2027-09-06T03:15:00+00:00",
], preview

# A refusal parses as the one error shape, details and all.
refused = create_task.sync_detailed(
    client=AuthenticatedClient(base_url=url, token=tokens.access_token),
    body=CreateTask(title="Never", schedule_kind="cron", schedule_expr="0 0 30 2 *"),
)
assert refused.status_code == 422, refused
assert isinstance(refused.parsed, ErrorBody), refused
assert refused.parsed.error.code == "validation_failed", refused.parsed
assert refused.parsed.error.details.field == "schedule_expr", refused.parsed

# A case submitted and read back with its history.
case = create_case.sync(
    client=client,
    body=NewCase(type_="cheque", reference="CHQ-000123", amount="1250.00", currency="USD"),
)
assert isinstance(case, Case), case
detail = get_case.sync(client=client, id=case.id)
assert isinstance(detail, CaseDetail), detail
assert detail.reference == "CHQ-000123" and detail.amount == "1250.00", detail
assert len(detail.history) >= 1, detail
assert detail.id == case.id and detail.state == case.state, detail

print("generated client: signed in, created and paged tasks, previewed, submitted and read a case")
