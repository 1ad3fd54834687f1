"""Push messages to a service's websocket clients from synchronous code."""

from deploy import metrics
from deploy.compat import call_layer_sync
from deploy.history import get_history
from deploy.protocol import group_name, timestamp, validate_message, validate_service


def send_channel_msg(service, message, *, entry_point="function"):
    """Send ``message`` to every websocket client of ``service``.

    For synchronous code (views, management commands, scripts after ``django.setup()``): the
    channel layer's coroutine runs through ``async_to_sync`` (see ``compat.call_layer_sync``), so
    do not call it from inside a running event loop. With the history on, the message is written
    to the service's history first; once this returns it is there (and, with
    ``DEPLOY_HISTORY_REPLICAS``, on that many replicas). Raises ``ValueError``
    (``deploy.protocol.InvalidInput``) for a bad service name or message, and the layer's (or the
    history's Redis client's) own error when the layer is unreachable.

    ``entry_point`` is the label the push is counted under in ``deploy_pushes_total``
    (``deploy.metrics``): the management command and the push endpoint name themselves.
    """
    validate_service(service)
    validate_message(message)
    group, ts = group_name(service), timestamp()
    history, ids = get_history(), {}
    try:
        if history is not None:
            published = history.publish_sync(service, message, "push", ts)
            ids = {"id": published.id, "epoch": published.epoch, "prev": published.prev}
        call_layer_sync(
            lambda layer: layer.group_send(
                group,
                {"type": "deploy.message", "message": message, "source": "push", "ts": ts, **ids},
            )
        )
    except Exception:
        metrics.LAYER_ERRORS.labels("push").inc()
        raise
    metrics.PUSHES.labels(entry_point).inc()
