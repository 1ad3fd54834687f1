"""``manage.py grant <service|pattern> [--write] [--seconds N]``: a grant for machine clients.

Prints the token: a websocket client offers it as the subprotocol ``grant.<token>`` beside
``deploy`` (``deploy.grants``). Anyone holding it reads the services it names until it expires.
"""

from deploy import grants
from deploy.compat import BaseCommand, CommandError
from deploy.protocol import InvalidInput

#: Exit status for a bad pattern or lifetime.
BAD_INPUT = 2
#: A machine client's grant lasts an hour unless told otherwise.
DEFAULT_SECONDS = 3600


class Command(BaseCommand):
    help = (
        "Print a grant that lets a websocket client read a service (or services: *) "
        "and, with --write, send."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "service", help="a service name, or a pattern with * (1-64 of A-Z a-z 0-9 _ . - *)"
        )
        parser.add_argument(
            "--write",
            action="store_true",
            help="the client may also send, to services in DEPLOY_CLIENT_WRITE_SERVICES",
        )
        parser.add_argument(
            "--seconds",
            type=int,
            default=DEFAULT_SECONDS,
            help=f"seconds it lasts (default {DEFAULT_SECONDS}, at most {grants.MAX_SECONDS})",
        )

    def handle(self, *args, **options):
        try:
            token = grants.issue(options["service"], options["write"], options["seconds"])
        except InvalidInput as exc:
            raise CommandError(str(exc), returncode=BAD_INPUT) from None
        self.stdout.write(token)
