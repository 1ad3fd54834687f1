"""``manage.py drain_websockets [--node NODE]``: close every websocket of one node with 4012."""

from deploy.compat import BaseCommand, CommandError, call_layer_sync
from deploy.protocol import current_node, node_group


class Command(BaseCommand):
    help = (
        "Close every websocket of a node with code 4012, so that its clients reconnect at once"
        " (through the balancer, to another host) and resume. Run it before taking a host out."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--node", help="the node to drain (default: DEPLOY_NODE, else this host's name)"
        )

    def handle(self, *args, **options):
        group = node_group(options["node"] or current_node())
        try:
            call_layer_sync(lambda layer: layer.group_send(group, {"type": "deploy.drain"}))
        except Exception as exc:
            raise CommandError(
                f"channel layer unreachable: {type(exc).__name__}: {exc}", returncode=1
            ) from exc
        self.stdout.write(f"sent drain to {group}")
