"""``manage.py push <service> <message|->``: push a message to a service's clients."""

import sys

from deploy.compat import BaseCommand, CommandError
from deploy.protocol import InvalidInput
from deploy.push import send_channel_msg

#: Exit status for a bad service name or message (1 stays for an unreachable layer).
BAD_INPUT = 2


class Command(BaseCommand):
    help = "Push a message to every websocket client of a service."
    # call_command(..., stdin=StringIO(...)) replaces standard input, for tests.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("service", help="service name, 1-64 of A-Z a-z 0-9 _ . -")
        parser.add_argument("message", help='the message, or "-" to read it from standard input')

    def handle(self, *args, **options):
        message = options["message"]
        if message == "-":
            message = options.get("stdin", sys.stdin).read().rstrip("\n")
        try:
            send_channel_msg(options["service"], message, entry_point="command")
        except InvalidInput as exc:
            raise CommandError(str(exc), returncode=BAD_INPUT) from None
        except Exception as exc:
            raise CommandError(
                f"channel layer unreachable: {type(exc).__name__}: {exc}", returncode=1
            ) from exc
        self.stdout.write(f"pushed to {options['service']}")
