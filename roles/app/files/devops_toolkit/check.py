"""The gate before a release becomes current: ``python -m devops_toolkit.check``.

Imports the ASGI and the WSGI application the way the servers will (``devops_toolkit.asgi`` and
``devops_toolkit.wsgi``, with the release's environment) and builds the channel layer, so that a
release that cannot serve stops the deploy with the project's own error instead of a process that
never starts or a websocket that fails.
Exit status 0 when both import; 1 otherwise, with each traceback on stderr.
"""

import importlib
import os
import sys
import traceback


def main():
    failed = []
    for kind, module, variable in (
        ("ASGI", "devops_toolkit.asgi", "DEVOPS_ASGI_APPLICATION"),
        ("WSGI", "devops_toolkit.wsgi", "DEVOPS_WSGI_APPLICATION"),
    ):
        name = os.environ.get(variable) or f"the {kind}_APPLICATION setting"
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - every failure is reported, with its traceback
            traceback.print_exc()
            print(f"{kind} application ({name}) does not import: {type(error).__name__}: {error}", file=sys.stderr)
            failed.append(kind)
        else:
            print(f"{kind} application ({name}) imports")
    # The channel layer is built on a process's first websocket: build it now (no connection is made).
    try:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
    except Exception as error:  # noqa: BLE001 - reported like the imports
        traceback.print_exc()
        print(f"the channel layer cannot be built: {type(error).__name__}: {error}", file=sys.stderr)
        failed.append("CHANNEL_LAYERS")
    else:
        print(f"channel layer {type(layer).__module__}.{type(layer).__name__} builds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
