"""Every channel-layer event the code sends has a handler on the consumer.

Channels dispatches an event of type ``a.b`` to the consumer method ``a_b``; an event nobody
handles makes the consumer raise. The blog post this app grew from sent ``deploy.run`` while
its consumer only handled ``client.message``: this test catches that class of mistake by
reading the source rather than trusting a list kept by hand.
"""

import ast

import pytest

from deploy import health
from deploy.consumers import DeployConsumer
from deploy.tests.helpers import APP_DIR

# The blog post's push helper, which deployments may still call.
LEGACY_HELPER = """
async_to_sync(channel_layer.group_send)(channel_name, {"type": "deploy.run", "text": msg})
"""


def sent_event_types(source, filename):
    """``(type, where)`` for every dict literal passed to a ``send``/``group_send`` call.

    A ``type`` given by a module-level constant is resolved; anything else fails.
    """
    tree = ast.parse(source, filename)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        if isinstance(func, ast.Call) and func.args:  # async_to_sync(layer.group_send)(...)
            func = func.args[0]
        if not (isinstance(func, ast.Attribute) and func.attr in ("send", "group_send")):
            continue
        for arg in call.args:
            if not isinstance(arg, ast.Dict):
                continue
            for key, value in zip(arg.keys, arg.values):
                if not (isinstance(key, ast.Constant) and key.value == "type"):
                    continue
                if isinstance(value, ast.Name):
                    assert value.id in constants, f"{filename}:{call.lineno}: unresolvable type"
                    found.append((constants[value.id], f"{filename}:{call.lineno}"))
                else:
                    assert isinstance(value, ast.Constant), f"{filename}:{call.lineno}: dynamic"
                    found.append((value.value, f"{filename}:{call.lineno}"))
    return found


def app_sources():
    for package in ("deploy", "devops"):
        for path in sorted((APP_DIR / package).rglob("*.py")):
            relative = path.relative_to(APP_DIR)
            if "tests" not in relative.parts:
                yield str(relative), path.read_text(encoding="utf-8")


def all_sent_event_types():
    found = sent_event_types(LEGACY_HELPER, "blog post helper")
    for filename, source in app_sources():
        found.extend(sent_event_types(source, filename))
    return found


def test_scan_finds_the_senders():
    found = {(event_type, where.split(":")[0]) for event_type, where in all_sent_event_types()}
    assert found == {
        ("deploy.run", "blog post helper"),
        ("deploy.message", "deploy/consumers.py"),
        ("deploy.message", "deploy/push.py"),
        ("deploy.drain", "deploy/management/commands/drain_websockets.py"),
        (health.PROBE_TYPE, "deploy/health.py"),
    }


@pytest.mark.parametrize("event_type, where", all_sent_event_types())
def test_consumer_handles_event(event_type, where):
    if event_type == health.PROBE_TYPE:
        return  # sent by /readyz to a channel of its own, never to a consumer
    handler = event_type.replace(".", "_")
    assert callable(getattr(DeployConsumer, handler, None)), f"{where}: no {handler}()"


def test_scan_sees_a_missing_handler():
    source = 'layer.group_send("deploy.x", {"type": "deploy.unknown"})'
    [(event_type, _)] = sent_event_types(source, "example")
    assert not hasattr(DeployConsumer, event_type.replace(".", "_"))
