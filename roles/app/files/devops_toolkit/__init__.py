"""What the toolkit puts in front of a deployed Django project (roles/app copies it into releases).

* ``devops_toolkit.settings``: the settings overlay, the project's settings plus what production
  needs, taken from the environment file (``app_settings_overlay``);
* ``devops_toolkit.asgi`` and ``devops_toolkit.wsgi``: the entry points the ASGI server and uwsgi
  run; they set Django up before the project's application is imported and can answer the health path;
* ``python -m devops_toolkit.check``: the gate a release passes before it becomes current.

Only the standard library and Django are imported here, so any Django >= 1.11 project can run it.
"""

import os
import shlex


def _load_release_environment():
    """Set the variables of this release's release.env (next to this package) in the environment.

    bin/run reads the file when a process starts; a uwsgi chain reload forks new workers from the old
    master, with the old release's values. Importing the package from the new release reads its own.
    """
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "release.env")
    if not os.path.exists(path):
        return
    with open(path) as file:
        for line in file:
            words = shlex.split(line, comments=True)
            if words and "=" in words[0]:
                name, _, value = words[0].partition("=")
                os.environ[name] = value


_load_release_environment()
