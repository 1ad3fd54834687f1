import json

import pytest

from deploy.protocol import (
    FRAME_OVERHEAD,
    InvalidInput,
    MessageTooLarge,
    dumps,
    parse_client_frame,
    validate_message,
    validate_service,
)

GOOD_SERVICES = ["tasks", "a", "web-1.prod_EU", "x" * 64]
BAD_SERVICES = ["", "x" * 65, "has space", "a/b", "tâche", "tasks\n", None, 7]


@pytest.mark.parametrize("service", GOOD_SERVICES)
def test_good_service_names(service):
    validate_service(service)


@pytest.mark.parametrize("service", BAD_SERVICES)
def test_bad_service_names(service):
    with pytest.raises(InvalidInput, match="invalid service name"):
        validate_service(service)


def test_invalid_input_is_a_value_error():
    assert issubclass(MessageTooLarge, InvalidInput)
    assert issubclass(InvalidInput, ValueError)


def test_message_size_counts_utf8_bytes(settings):
    settings.DEPLOY_MAX_MESSAGE_BYTES = 4
    validate_message("abcd")
    validate_message("éé")  # 4 bytes
    with pytest.raises(MessageTooLarge, match="5 bytes, the limit is 4"):
        validate_message("ééa")


def test_message_size_counts_what_json_escapes_as_sent(settings):
    settings.DEPLOY_MAX_MESSAGE_BYTES = 4
    validate_message('a"b')  # a \" b: 4 bytes
    with pytest.raises(MessageTooLarge, match="6 bytes, the limit is 4"):
        validate_message("\x01")  # \u0001


def test_a_message_frame_adds_at_most_the_frame_overhead():
    message = "x" * 100
    frame = {
        "type": "message",
        "service": "s" * 64,
        "message": message,
        "seq": 2**63,
        "ts": "2026-11-30T11:11:12.922811+00:00",
        "source": "client",
        "id": f"{2**64}-{2**64}",
        "epoch": "7-" + "x" * 64,
        "prev": f"{2**64}-{2**64}",
        "replay": True,
    }
    assert len(dumps(frame).encode()) - len(message) <= FRAME_OVERHEAD


@pytest.mark.parametrize(
    "message, error",
    [(None, "must be a string"), (b"bytes", "must be a string"), ("", "empty")],
)
def test_bad_messages(message, error):
    with pytest.raises(InvalidInput, match=error):
        validate_message(message)


def test_parse_client_frame():
    assert parse_client_frame(json.dumps({"message": "hello", "extra": 1})) == "hello"


@pytest.mark.parametrize(
    "text_data, error",
    [
        (None, "binary frames"),
        ("", "not valid JSON"),
        ("hello", "not valid JSON"),
        ('["message"]', "JSON object"),
        ('"message"', "JSON object"),
        ("{}", 'no "message"'),
        ('{"message": 1}', "must be a string"),
        ('{"message": ""}', "empty"),
    ],
)
def test_parse_bad_client_frames(text_data, error):
    with pytest.raises(InvalidInput, match=error):
        parse_client_frame(text_data)


def test_parse_client_frame_checks_frame_size(settings):
    settings.DEPLOY_MAX_MESSAGE_BYTES = 20
    frame = json.dumps({"message": "x" * 10})
    assert len(frame) > 20
    with pytest.raises(MessageTooLarge, match="frame is"):
        parse_client_frame(frame)
