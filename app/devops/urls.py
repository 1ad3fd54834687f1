"""HTTP routes; the websocket routes are in ``devops.routing``."""

from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns

from deploy import views
from devops.compat import re_path

# The service-name patterns are permissive on purpose: the views validate the name and say why.
urlpatterns = [
    re_path(r"^$", views.index, name="index"),
    re_path(r"^deploy/(?P<service>[^/]+)/$", views.service_page, name="service"),
    re_path(r"^deploy/(?P<service>[^/]+)/grant/$", views.grant, name="grant"),
    re_path(
        r"^accounts/login/$",
        auth_views.LoginView.as_view(template_name="deploy/login.html"),
        name="login",
    ),
    re_path(r"^accounts/logout/$", auth_views.LogoutView.as_view(next_page="/"), name="logout"),
    re_path(r"^api/push/(?P<service>[^/]+)/$", views.push, name="push"),
    re_path(r"^healthz$", views.healthz, name="healthz"),
    re_path(r"^readyz$", views.readyz, name="readyz"),
    re_path(r"^metrics$", views.metrics_view, name="metrics"),
]

# With DJANGO_DEBUG=true, serve static files from the apps (nginx serves STATIC_ROOT otherwise).
urlpatterns += staticfiles_urlpatterns()
