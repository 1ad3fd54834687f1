"""Prometheus metrics of the deploy app, added up over every process of a deployment.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the app role sets it), each process (uwsgi worker, ASGI
server, ``manage.py push``) writes its values to files in that directory and ``/metrics``
(``deploy.views.metrics``) adds them up: prometheus_client's multiprocess mode. Without it the
values live in the process (tests, ``runserver``).

The directory must be empty when the first process of a deployment starts (the app role keeps it
under the runtime directory, a tmpfs emptied at boot and at every start of the container image).
``collect`` then keeps it small: the files of processes that have exited are merged into one file
per metric type, and the open-websocket counts of a killed process are dropped with them.
"""

import fcntl
import glob
import os
from datetime import datetime

DIRECTORY = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if DIRECTORY:
    # Before prometheus_client opens its first file there; private to the app's user.
    os.makedirs(DIRECTORY, mode=0o700, exist_ok=True)

from prometheus_client import (  # noqa: E402  (the directory must exist first)
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as PROCESS_REGISTRY  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict, mmap_key  # noqa: E402

#: What ``collect`` returns.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Services counted under their own label in a process; the rest are counted as ``OTHER``: clients
#: choose the names, and each name is a time series to store.
MAX_SERVICES = 100
OTHER = "_other"

WEBSOCKETS_OPEN = Gauge(
    "deploy_websockets_open",
    "Websockets open, by service",
    ["service"],
    multiprocess_mode="livesum",
)
WEBSOCKETS_REFUSED = Counter(
    "deploy_websockets_refused",
    "Websocket handshakes refused, by reason (origin: not the site's; service: a bad name; "
    "grant: no valid grant for the service)",
    ["reason"],
)
DELIVERIES = Counter(
    "deploy_deliveries",
    "Message frames sent to websocket clients, by kind (live; replay: missed while away, sent "
    "on resume; gap: lost by the channel layer, sent from the history)",
    ["kind"],
)
DELIVERY_LATENCY = Histogram(
    "deploy_delivery_latency_seconds",
    "From a message's timestamp (when it was pushed) to its live frame being sent to a client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUSHES = Counter(
    "deploy_pushes",
    "Messages pushed to the channel layer, by entry point (function: send_channel_msg; command: "
    "manage.py push; http: the push endpoint; client: a websocket client)",
    ["entry_point"],
)
FRAMES_REFUSED = Counter(
    "deploy_frames_refused",
    "Frames from websocket clients refused, by reason (invalid; read_only: the connection may not "
    "send; rate: over the client's frame budget, the connection is closed)",
    ["reason"],
)
RESUMES = Counter(
    "deploy_resumes",
    "Reconnected clients that named their position, by outcome (resumed: every missed message "
    "replayed; gap: some were gone)",
    ["outcome"],
)
GAPS_UNREADABLE = Counter(
    "deploy_gaps_unreadable",
    "Messages lost by the channel layer that the history could not give back (the client was "
    "closed with 1011 to resume)",
)
LAYER_ERRORS = Counter(
    "deploy_layer_errors",
    "Failed calls to the channel layer or the history, by operation (push; history_check: the "
    "quiet-connection check; gap_read)",
    ["operation"],
)
HTTP_DURATION = Histogram(
    "deploy_http_request_duration_seconds",
    "Time to answer HTTP requests, by view (URL name) and status class",
    ["view", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

LIVE = DELIVERIES.labels("live")
REPLAY = DELIVERIES.labels("replay")
GAP = DELIVERIES.labels("gap")

_services = set()


def service_label(service):
    """``service``, or ``OTHER`` once this process has labelled ``MAX_SERVICES`` others."""
    if service in _services:
        return service
    if len(_services) >= MAX_SERVICES:
        return OTHER
    _services.add(service)
    return service


_last_ts = (None, 0.0)


def observe_latency(ts, now):
    """Record a live delivery of a message stamped ``ts`` (``protocol.timestamp``) at ``now``.

    Every client of a service gets the same message: its timestamp is parsed once per process.
    """
    global _last_ts
    text, seconds = _last_ts
    if ts != text:
        try:
            seconds = datetime.fromisoformat(ts).timestamp()
        except (TypeError, ValueError):
            return  # a message sent by other code, without our timestamp
        _last_ts = (ts, seconds)
    DELIVERY_LATENCY.observe(max(now - seconds, 0.0))


def collect():
    """The metrics in Prometheus' text format (``CONTENT_TYPE``)."""
    if not DIRECTORY:
        return generate_latest(PROCESS_REGISTRY)
    with open(os.path.join(DIRECTORY, "lock"), "a") as lock:
        # One compaction at a time, and no scrape in the middle of one.
        fcntl.flock(lock, fcntl.LOCK_EX)
        compact(DIRECTORY)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=DIRECTORY)
        return generate_latest(registry)


#: The merged values of exited processes: ``<type>_archive.db`` (read like any process's file).
ARCHIVE = "archive"


def compact(directory):
    """Merge the files of exited processes into the archives; drop their live gauges.

    Files are named ``<type>_<pid>.db`` and ``gauge_<mode>_<pid>.db``. A counter or histogram of an
    exited process still counts: it goes into ``<type>_archive.db``. The open-websocket counts of
    a process that exited without cleaning up (``kill -9``) do not. The caller holds the lock.
    """
    exited = {}
    for path in glob.glob(os.path.join(directory, "*.db")):
        parts = os.path.basename(path)[: -len(".db")].split("_")
        pid = parts[-1]
        if pid == ARCHIVE or not pid.isdigit() or alive(int(pid)):
            continue
        if parts[0] == "gauge":
            if parts[1].startswith("live"):
                os.remove(path)
            continue  # other gauge modes keep a dead process' value on purpose
        exited.setdefault(parts[0], []).append(path)
    for kind, paths in exited.items():
        archive = os.path.join(directory, f"{kind}_{ARCHIVE}.db")
        sources = paths + ([archive] if os.path.exists(archive) else [])
        merged = multiprocess.MultiProcessCollector.merge(sources, accumulate=False)
        temporary = os.path.join(directory, f"{kind}_{ARCHIVE}.new")
        if os.path.exists(temporary):
            os.remove(temporary)
        values = MmapedDict(temporary)
        try:
            for metric in merged:
                for sample in metric.samples:
                    labels = sample.labels
                    key = mmap_key(
                        metric.name, sample.name, list(labels), list(labels.values()),
                        metric.documentation,
                    )  # fmt: skip
                    values.write_value(key, sample.value, 0.0)
        finally:
            values.close()
        # A crash between these steps loses the exited processes' counts (a counter reset, which
        # Prometheus' rate() handles) rather than counting them twice.
        for path in paths:
            os.remove(path)
        os.replace(temporary, archive)


def alive(pid):
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
