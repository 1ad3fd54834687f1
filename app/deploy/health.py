"""The checks behind ``/readyz``: the database and a channel-layer round trip."""

import asyncio
import logging
import threading

from django.db import connection

from deploy.compat import call_layer_sync

logger = logging.getLogger(__name__)

#: Seconds the channel-layer round trip may take, connecting included.
LAYER_TIMEOUT = 2.0
#: Type of the probe message; it goes to a channel of its own and never reaches a consumer.
PROBE_TYPE = "readyz.probe"

# channels-redis refuses receive() from two event loops at once, and every async_to_sync call
# of a threaded WSGI worker runs its own loop: probes of one process take turns.
_layer_lock = threading.Lock()


def check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _layer_round_trip(layer):
    channel = await layer.new_channel()
    await layer.send(channel, {"type": PROBE_TYPE})
    await layer.receive(channel)


def check_channel_layer():
    with _layer_lock:
        call_layer_sync(lambda layer: asyncio.wait_for(_layer_round_trip(layer), LAYER_TIMEOUT))


CHECKS = {"database": check_database, "channel_layer": check_channel_layer}


def run_checks():
    """Run every check; return ``(all_ok, {name: "ok" | "error"})``, logging each failure."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            logger.warning("readyz: %s check failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = "error"
        else:
            results[name] = "ok"
    return all(result == "ok" for result in results.values()), results
