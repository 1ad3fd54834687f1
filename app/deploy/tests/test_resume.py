"""The message history through the consumer: hello, ids, resume, gaps (in-memory layer)."""

import io
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.management import call_command

from deploy import history
from deploy.push import send_channel_msg
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import needs_history

pytestmark = needs_history


async def push(service, message):
    await sync_to_async(send_channel_msg)(service, message)


async def receive(communicator):
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def entries(service):
    """Everything the history holds for ``service``."""
    return (await history.get_history().read(service, history.START)).entries


def position(frame):
    return f"after={frame['id']}&epoch={frame['epoch']}"


def order(frame_id):
    return history.parse_id(frame_id)


async def test_hello_of_a_service_without_history(connect):
    client = await connect("tasks")
    assert client.hello == {"type": "hello", "service": "tasks", "epoch": "", "last": "0-0"}


async def test_hello_names_the_newest_entry_and_its_epoch(connect):
    first = await connect("tasks")
    await push("tasks", "one")
    await push("tasks", "two")
    frames = [await receive(first) for _ in range(2)]
    second = await connect("tasks")
    assert second.hello == {
        "type": "hello",
        "service": "tasks",
        "epoch": frames[1]["epoch"],
        "last": frames[1]["id"],
    }


async def test_message_frames_carry_increasing_ids_of_one_epoch(connect):
    client = await connect("tasks")
    for message in ("one", "two", "three"):
        await push("tasks", message)
    frames = [await receive(client) for _ in range(3)]
    assert all("replay" not in frame for frame in frames)
    assert len({frame["epoch"] for frame in frames}) == 1
    assert frames[0]["epoch"]
    ids = [order(frame["id"]) for frame in frames]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [entry.id for entry in await entries("tasks")] == [frame["id"] for frame in frames]


async def test_resume_replays_exactly_the_missed_messages(connect):
    client = await connect("tasks")
    await push("tasks", "seen")
    seen = await receive(client)
    await client.disconnect()
    await push("tasks", "missed 1")
    await push("tasks", "missed 2")
    back = await connect("tasks", query=position(seen))
    replayed = [await receive(back) for _ in range(2)]
    assert [(f["message"], f["seq"], f["replay"]) for f in replayed] == [
        ("missed 1", 1, True),
        ("missed 2", 2, True),
    ]
    assert {f["epoch"] for f in replayed} == {seen["epoch"]}
    assert await receive(back) == {"type": "resumed", "replayed": 2}
    await push("tasks", "live")
    live = await receive(back)
    assert (live["message"], live["seq"], "replay" in live) == ("live", 3, False)


async def test_resume_with_nothing_missed(connect):
    client = await connect("tasks")
    await push("tasks", "seen")
    seen = await receive(client)
    back = await connect("tasks", query=position(seen))
    assert await receive(back) == {"type": "resumed", "replayed": 0}


async def test_client_that_saw_an_empty_service_resumes_from_the_start(connect):
    client = await connect("tasks")
    query = f"after={client.hello['last']}&epoch={client.hello['epoch']}"
    await push("tasks", "first ever")
    back = await connect("tasks", query=query)
    assert (await receive(back))["message"] == "first ever"
    assert await receive(back) == {"type": "resumed", "replayed": 1}


async def test_live_duplicate_of_a_replayed_message_is_skipped(connect):
    await push("tasks", "seen")
    [seen] = await entries("tasks")
    # Written to the history, but its group_send is late: it reaches the group after the
    # client joined, so the client gets it from the replay and live.
    ts = "2026-01-02T03:04:05+00:00"
    late_id, epoch, prev = history.get_history().publish_sync("tasks", "late", "push", ts)
    back = await connect("tasks", query=f"after={seen.id}&epoch={epoch}")
    assert (await receive(back))["message"] == "late"
    assert await receive(back) == {"type": "resumed", "replayed": 1}
    late = {"type": "deploy.message", "message": "late", "source": "push", "ts": ts}
    await get_channel_layer().group_send(
        "deploy.tasks", {**late, "id": late_id, "epoch": epoch, "prev": prev}
    )
    await push("tasks", "next")
    frame = await receive(back)
    assert (frame["message"], frame["seq"]) == ("next", 2)


async def test_messages_between_hello_and_joining_are_sent(connect, monkeypatch):
    """A message published after the consumer read the stream's head reaches the client too."""
    for message in ("old", "raced the join"):
        await push("tasks", message)
    old, raced = await entries("tasks")

    async def head_before_the_race(self, service):
        return old_epoch, old.id

    old_epoch = (await history.get_history().head("tasks"))[0]
    monkeypatch.setattr(history.MemoryHistory, "head", head_before_the_race)
    client = await connect("tasks")
    assert client.hello["last"] == old.id
    frame = await receive(client)
    assert (frame["message"], frame["id"], "replay" in frame) == ("raced the join", raced.id, False)
    assert await client.receive_nothing(timeout=0.1)


async def test_trimmed_history_gives_a_gap(connect, settings):
    settings.DEPLOY_HISTORY_LENGTH = 2
    client = await connect("tasks")
    await push("tasks", "seen")
    seen = await receive(client)
    await client.disconnect()
    for number in range(1, 5):
        await push("tasks", f"later {number}")
    back = await connect("tasks", query=position(seen))
    assert [(await receive(back))["message"] for _ in range(2)] == ["later 3", "later 4"]
    assert await receive(back) == {"type": "gap", "replayed": 2, "reason": "trimmed"}


async def test_other_epoch_gives_everything_and_a_gap(connect):
    for message in ("one", "two"):
        await push("tasks", message)
    [first, _] = await entries("tasks")
    back = await connect("tasks", query=f"after={first.id}&epoch=an-older-epoch")
    replayed = [await receive(back) for _ in range(2)]
    assert [(f["message"], f["replay"]) for f in replayed] == [("one", True), ("two", True)]
    assert await receive(back) == {"type": "gap", "replayed": 2, "reason": "epoch"}


@pytest.mark.parametrize(
    "query, error",
    [
        ("after=yesterday&epoch=abc", "invalid message id"),
        ("after=&epoch=abc", "invalid message id"),
        ("after=1-2-3", "invalid message id"),
        (f"after={2**64}-0&epoch=abc", "invalid message id"),
        ("after=1-0&epoch=no%20spaces", "invalid epoch"),
        (f"after=1-0&epoch={'e' * 65}", "invalid epoch"),
    ],
)
async def test_malformed_position_gets_an_error_and_no_replay(connect, query, error):
    await push("tasks", "before")
    client = await connect("tasks", query=query)
    frame = await receive(client)
    assert frame["type"] == "error" and error in frame["error"]
    assert await client.receive_nothing(timeout=0.1)
    await push("tasks", "after")
    assert (await receive(client))["message"] == "after"


async def test_every_entry_point_writes_to_the_history(connect, client, settings):
    settings.DEPLOY_PUSH_TOKEN = "token"
    socket = await connect("tasks")
    await push("tasks", "send_channel_msg")
    await sync_to_async(call_command)("push", "tasks", "manage.py push", stdout=io.StringIO())
    response = await sync_to_async(client.post)(
        "/api/push/tasks/",
        json.dumps({"message": "http push"}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer token",
    )
    assert response.status_code == 202
    await socket.send_json_to({"message": "client frame"})
    frames = [await receive(socket) for _ in range(4)]
    stored = await entries("tasks")
    assert [(e.id, e.message, e.source) for e in stored] == [
        (f["id"], f["message"], f["source"]) for f in frames
    ]
    assert [e.source for e in stored] == ["push", "push", "push", "client"]


def test_send_channel_msg_fails_when_the_history_fails(settings, monkeypatch):
    def broken(*args):
        raise ConnectionError("history down")

    monkeypatch.setattr(history.MemoryHistory, "publish_sync", broken)
    with pytest.raises(ConnectionError):
        send_channel_msg("tasks", "lost")


async def test_history_off_gives_the_old_frames(connect, settings):
    settings.DEPLOY_HISTORY_LENGTH = 0
    client = await connect("tasks", query="after=garbage&epoch=!")
    assert client.hello is None
    await push("tasks", "plain")
    frame = await receive(client)
    assert set(frame) == {"type", "service", "message", "seq", "ts", "source"}
    await client.send_json_to({"message": "from the client"})
    assert set(await receive(client)) == {"type", "service", "message", "seq", "ts", "source"}
    assert history.get_history() is None


# Gaps in the live events (the pub/sub layer loses what is published around a failover).


async def publish_live(service, message, group_send=True):
    """Write a message to the history and, unless ``group_send`` is false, send its event."""
    ts = "2026-01-02T03:04:05+00:00"
    published = await history.get_history().publish(service, message, "push", ts)
    if group_send:
        event = {"type": "deploy.message", "message": message, "source": "push", "ts": ts}
        await get_channel_layer().group_send(f"deploy.{service}", {**event, **published._asdict()})
    return published


async def test_live_frames_carry_prev(connect):
    client = await connect("tasks")
    first = await publish_live("tasks", "one")
    second = await publish_live("tasks", "two")
    frames = [await receive(client), await receive(client)]
    assert [(f["id"], f["prev"]) for f in frames] == [(first.id, "0-0"), (second.id, first.id)]


async def test_lost_live_event_is_fetched_from_the_stream(connect):
    """The middle entry's event never reaches the group: the client still gets all three."""
    client = await connect("tasks")
    published = [
        await publish_live("tasks", "one"),
        await publish_live("tasks", "two", group_send=False),
        await publish_live("tasks", "three"),
    ]
    frames = [await receive(client) for _ in range(3)]
    assert [f["message"] for f in frames] == ["one", "two", "three"]
    assert [f["id"] for f in frames] == [p.id for p in published]
    assert [f["seq"] for f in frames] == [1, 2, 3]
    assert frames[1]["prev"] == published[0].id and "replay" not in frames[1]
    # Nothing more: no duplicate of "two" when its event is late after all.
    late = {"type": "deploy.message", "message": "two", "source": "push", "ts": "t"}
    await get_channel_layer().group_send("deploy.tasks", {**late, **published[1]._asdict()})
    await push("tasks", "four")
    frame = await receive(client)
    assert (frame["message"], frame["seq"], frame["prev"]) == ("four", 4, published[2].id)


async def test_lost_events_after_a_resume_are_fetched(connect):
    await push("tasks", "seen")
    [seen] = await entries("tasks")
    epoch = (await history.get_history().head("tasks"))[0]
    client = await connect("tasks", query=f"after={seen.id}&epoch={epoch}")
    assert await receive(client) == {"type": "resumed", "replayed": 0}
    await publish_live("tasks", "lost 1", group_send=False)
    await publish_live("tasks", "lost 2", group_send=False)
    await publish_live("tasks", "live")
    frames = [await receive(client) for _ in range(3)]
    assert [f["message"] for f in frames] == ["lost 1", "lost 2", "live"]


async def test_out_of_order_events_are_delivered_in_order(connect):
    """Concurrent publishers: the later entry's event first; the earlier one comes with it."""
    client = await connect("tasks")
    first = await publish_live("tasks", "first", group_send=False)
    second = await publish_live("tasks", "second")
    event = {"type": "deploy.message", "message": "first", "source": "push", "ts": "t"}
    await get_channel_layer().group_send("deploy.tasks", {**event, **first._asdict()})
    await push("tasks", "third")
    frames = [await receive(client) for _ in range(3)]
    assert [f["message"] for f in frames] == ["first", "second", "third"]
    assert history.parse_id(second.id) > history.parse_id(first.id)


async def test_events_without_prev_are_delivered_as_before(connect):
    """Events of a release without ``prev`` (rolling deploy): no gap check, no reordering."""
    client = await connect("tasks")
    first = await publish_live("tasks", "first", group_send=False)
    ts = "2026-01-02T03:04:05+00:00"
    second = await history.get_history().publish("tasks", "second", "push", ts)
    event = {"type": "deploy.message", "message": "second", "source": "push", "ts": ts}
    await get_channel_layer().group_send(
        "deploy.tasks", {**event, "id": second.id, "epoch": second.epoch}
    )
    frame = await receive(client)
    assert frame["message"] == "second" and "prev" not in frame
    assert first.id != second.id


async def test_unreadable_gap_closes_the_connection(connect, monkeypatch):
    """Missed messages that cannot be read: close (1011) so that the client resumes; skip none."""
    client = await connect("tasks")
    await publish_live("tasks", "one")
    assert (await receive(client))["message"] == "one"

    async def broken(self, service, after, before):
        raise ConnectionError("history unreachable")

    monkeypatch.setattr(history.MemoryHistory, "between", broken)
    await publish_live("tasks", "lost", group_send=False)
    await publish_live("tasks", "three")
    assert await client.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 1011}


# The last messages before a quiet spell: no later event shows their loss (DEPLOY_HISTORY_CHECK_MS).


async def test_a_lost_last_event_reaches_a_quiet_client_from_the_history_check(connect, settings):
    settings.DEPLOY_HISTORY_CHECK_MS = 200
    client = await connect("tasks")
    first = await publish_live("tasks", "one")
    lost = await publish_live("tasks", "lost", group_send=False)
    frames = [await receive(client), await receive(client)]
    assert [(f["message"], f["id"], f["seq"]) for f in frames] == [
        ("one", first.id, 1),
        ("lost", lost.id, 2),
    ]
    assert frames[1]["prev"] == first.id and "replay" not in frames[1]
    # Its late event is a duplicate; the next one follows it.
    late = {"type": "deploy.message", "message": "lost", "source": "push", "ts": "t"}
    await get_channel_layer().group_send("deploy.tasks", {**late, **lost._asdict()})
    await push("tasks", "next")
    frame = await receive(client)
    assert (frame["message"], frame["seq"], frame["prev"]) == ("next", 3, lost.id)


async def test_without_the_history_check_a_lost_last_event_never_arrives(connect, settings):
    """The case the check closes: nothing after the lost entry, so no ``prev`` shows the gap."""
    settings.DEPLOY_HISTORY_CHECK_MS = 0
    client = await connect("tasks")
    await publish_live("tasks", "one")
    await publish_live("tasks", "lost", group_send=False)
    assert (await receive(client))["message"] == "one"
    assert await client.receive_nothing(timeout=1)


async def test_quiet_clients_of_a_service_share_one_read_of_the_stream_per_interval(
    connect, settings, monkeypatch
):
    settings.DEPLOY_HISTORY_CHECK_MS = 300
    clients = [await connect("tasks") for _ in range(20)]
    reads = []
    head = history.MemoryHistory.head

    async def counted(self, service):
        reads.append(service)
        return await head(self, service)

    monkeypatch.setattr(history.MemoryHistory, "head", counted)
    await publish_live("tasks", "lost", group_send=False)
    for client in clients:
        assert (await receive(client))["message"] == "lost"
    # 20 clients, a few intervals: one read per interval, not one per client.
    assert 1 <= len(reads) <= 4, reads
