"""daphne with two additions:  python -m devops_toolkit.daphne [--send-buffer-limit BYTES]
[--access-log-format {text,json}] [daphne's arguments]

``--send-buffer-limit BYTES``: daphne writes each message to a websocket client into an in-memory buffer that has no
bound: a client that stops reading (or reads slower than messages come) makes the server hold everything sent to it,
and the process keeps the memory after the client leaves. With the limit, once a client's unsent bytes pass BYTES
the application's next send to it waits until they are under it again, as uvicorn's write limit does: the sending
consumer pauses, the channel layer drops what the consumer's channel cannot hold (the client gets it back from the
history when it resumes), and a client that reads nothing at all stops answering pings and is disconnected after the
ping timeout. 0 (the default) keeps daphne's behaviour.

``--access-log-format json``: daphne's access log entries (HTTP requests; websockets connecting, connected, rejected
and disconnected) as one JSON object a line instead of daphne's NCSA-like text:

    {"time": "2026-11-30T21:50:02.123+00:00", "client": "10.0.0.7:51234", "action": "WSCONNECT",
     "path": "/ws/deploy/tasks/", "status": null, "bytes": null}

``action`` is the HTTP method, or daphne's websocket word. Every other argument is daphne's, unchanged.
"""

import argparse
import asyncio
import json
import logging
import sys

from daphne import access, cli, server

logger = logging.getLogger(__name__)


def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
    """``AccessLogGenerator.write_entry`` writing one JSON object a line."""
    action, _, path = request.partition(" ")
    entry = {
        "time": date.astimezone().isoformat(timespec="milliseconds"),
        "client": host,
        "action": action,
        "path": path,
        "status": status,
        "bytes": length,
    }
    self.stream.write(json.dumps(entry, separators=(",", ":")) + "\n")


def unsent_bytes(transport):
    """Bytes a Twisted socket transport holds for its peer; None for a transport that does not say (a TLS wrapper).

    Twisted has no public accessor: these are ``FileDescriptor``'s buffer attributes, unchanged since Twisted 8."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return None


def limit_send_buffer(limit, pause=0.05, report_after=1.0):
    """Make the application's sends to a websocket client wait while the client has more than ``limit`` bytes
    unsent; a wait longer than ``report_after`` seconds is logged once per connection."""
    handle_reply = server.Server.handle_reply

    async def wait_for_the_client(self, protocol, message):
        await handle_reply(self, protocol, message)
        transport, connection, waited = getattr(protocol, "transport", None), self.connections.get(protocol), 0.0
        while transport is not None and connection is not None and "disconnected" not in connection:
            unsent = unsent_bytes(transport)
            if unsent is None or unsent <= limit:
                break
            if waited >= report_after and not connection.get("toolkit_reported"):
                connection["toolkit_reported"] = True
                logger.warning(
                    "websocket %s: %d bytes not read by the client for %.0f s (limit %d): sends to it wait",
                    protocol.client_addr,
                    unsent,
                    waited,
                    limit,
                )
            await asyncio.sleep(pause)
            waited += pause

    server.Server.handle_reply = wait_for_the_client


def main(argv=None):
    # No abbreviations: daphne's own --access-log must not be taken for --access-log-format.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--send-buffer-limit", type=int, default=0, metavar="BYTES")
    parser.add_argument("--access-log-format", choices=["text", "json"], default="text")
    ours, daphnes = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if ours.send_buffer_limit < 0:
        parser.error("--send-buffer-limit must be 0 (no limit) or a number of bytes")
    if ours.send_buffer_limit:
        limit_send_buffer(ours.send_buffer_limit)
    if ours.access_log_format == "json":
        access.AccessLogGenerator.write_entry = write_entry
    cli.CommandLineInterface().run(daphnes)


if __name__ == "__main__":
    main()
