"""The app keeps no data of its own in the database: ``Stream`` only carries the permissions that
``deploy.grants`` checks (no table is created for it)."""

from django.db import models


class Stream(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = (
            ("read_stream", "Can read every service's messages"),
            ("write_stream", "Can send to the services that let clients send"),
        )
