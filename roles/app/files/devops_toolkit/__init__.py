"""What the toolkit puts in front of a deployed Django project (roles/app copies it into releases).

* ``devops_toolkit.settings``: the settings overlay, the project's settings plus what production
  needs, taken from the environment file (``app_settings_overlay``);
* ``devops_toolkit.asgi`` and ``devops_toolkit.wsgi``: the entry points the ASGI server and uwsgi
  run; they set Django up before the project's application is imported and can answer the health path;
* ``python -m devops_toolkit.check``: the gate a release passes before it becomes current.

Only the standard library and Django are imported here, so any Django >= 1.11 project can run it.
"""
