"""daphne with its access log as JSON lines:  python -m devops_toolkit.daphne_json [daphne's arguments]

The same entries as daphne's own access log (HTTP requests; websockets connecting, connected, rejected and
disconnected), one JSON object a line instead of daphne's NCSA-like text:

    {"time": "2026-11-30T21:50:02.123+00:00", "client": "10.0.0.7:51234", "action": "WSCONNECT",
     "path": "/ws/deploy/tasks/", "status": null, "bytes": null}

``action`` is the HTTP method, or daphne's websocket word. Everything else is daphne's command line, unchanged.
"""

import json

from daphne import access, cli


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


access.AccessLogGenerator.write_entry = write_entry

if __name__ == "__main__":
    cli.CommandLineInterface.entrypoint()
