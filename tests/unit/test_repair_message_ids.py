"""The repair reads the task id of a `finq.run` message, and the chunk of a
`finq.batch_chunk` message, as kombu stores them in Redis."""

import json
from base64 import b64encode

from finq_core.repair import message_chunk, message_task_id

TASK_ID = "11111111-2222-3333-4444-555555555555"


def envelope(
    task: str = "finq.run", argsrepr: bool = True, args: list[object] | None = None
) -> dict[str, object]:
    """A message as kombu's Redis transport stores it (captured from a real send)."""
    args = args or [TASK_ID]
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None}])
    headers: dict[str, object] = {"lang": "py", "task": task, "id": "c0ffee", "retries": 0}
    if argsrepr:
        headers["argsrepr"] = repr(args)
    return {
        "body": b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {"delivery_info": {"exchange": "", "routing_key": "normal"}},
    }


def test_the_id_is_read_from_celerys_argsrepr_header() -> None:
    assert message_task_id(json.dumps(envelope())) == TASK_ID


def test_without_the_header_the_body_is_decoded() -> None:
    assert message_task_id(json.dumps(envelope(argsrepr=False))) == TASK_ID


def test_an_unacked_entry_holds_the_message_first() -> None:
    entry = json.dumps([envelope(argsrepr=False), "", "normal"])
    assert message_task_id(entry, unacked=True) == TASK_ID
    assert message_task_id(json.dumps([envelope(), "", "normal"]), unacked=True) == TASK_ID


def test_other_tasks_and_garbage_carry_no_task_id() -> None:
    assert message_task_id(json.dumps(envelope(task="finq.chart"))) is None
    assert message_task_id('{"headers": {"task": "finq.run"}, "body": "!!"}') is None
    assert message_task_id("not json") is None


def test_a_chunk_message_names_its_batch_and_chunk_by_header_or_body() -> None:
    def chunk(argsrepr: bool) -> dict[str, object]:
        return envelope("finq.batch_chunk", argsrepr, [TASK_ID, 17])

    assert message_chunk(json.dumps(chunk(True))) == f"{TASK_ID}:17"
    assert message_chunk(json.dumps(chunk(False))) == f"{TASK_ID}:17"
    assert message_chunk(json.dumps([chunk(False), "", "normal"]), unacked=True) == f"{TASK_ID}:17"
    assert message_task_id(json.dumps(chunk(True))) is None


def test_other_messages_carry_no_chunk() -> None:
    assert message_chunk(json.dumps(envelope())) is None
    assert message_chunk('{"headers": {"task": "finq.batch_chunk"}, "body": "!!"}') is None
