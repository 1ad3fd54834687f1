#!/usr/bin/env bash
# Proves what the LEGACY dependency profile needs: in a throw-away bullseye container (Python 3.9)
# each scenario installs a lock from app/requirements/ with --require-hashes, runs `pip check`,
# applies its patches from roles/app/files/patches/, serves the bundled app (app/, or a tiny
# Django 1.11 + channels project when the app does not import) with daphne on 127.0.0.1 inside
# the container, next to a redis-server, and sends 6 sequential GET /healthz through daphne.
#
#   tests/legacy/prove_legacy.sh [SCENARIO...]      # default: all three
#   LEGACY_PROJECT=tiny tests/legacy/prove_legacy.sh  # serve the tiny project even if app/ imports
#
#   legacy          legacy.txt, no patch             expect 200 500 500 500 500 500 (defect 1)
#   legacy-patched  legacy.txt + the 5 legacy patches  expect 200 200 200 200 200 200
#   legacy-fixed    legacy-fixed.txt + daphne 2.5 patch expect 200 200 200 200 200 200
#
# Needs docker and devops-channels/debian:bullseye (scripts/build-base-image.sh bullseye). The
# container (legacy-lab-<random>) reaches Debian's archive and PyPI only, and is removed on exit.
# Exit status 0 when every scenario answered as expected.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
image=${LEGACY_IMAGE:-devops-channels/debian:bullseye}
name=legacy-lab-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(legacy legacy-patched legacy-fixed)
for s in "${scenarios[@]}"; do
  case "$s" in legacy | legacy-patched | legacy-fixed) ;; *) echo "unknown scenario: $s" >&2; exit 2 ;; esac
done
docker image inspect "$image" >/dev/null 2>&1 \
  || { echo "no image $image: run scripts/build-base-image.sh bullseye" >&2; exit 2; }

trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$name" -v "$root:/src:ro" "$image" sleep infinity >/dev/null
echo "container $name ($image)"

docker exec -i -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
  -e LEGACY_PROJECT="${LEGACY_PROJECT:-auto}" \
  "$name" bash -s -- "${scenarios[@]}" <<'INNER'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq python3-venv patch redis-server curl >/dev/null 2>&1
echo "$(python3 --version), $(redis-server --version | cut -d' ' -f1-3)"
redis-server --bind 127.0.0.1 --port 6379 --save '' --daemonize yes >/dev/null

export DJANGO_SECRET_KEY=legacy-lab-not-secret DJANGO_DEBUG=false CHANNEL_LAYER=redis \
  REDIS_URL=redis://127.0.0.1:6379/0 DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost DJANGO_HTTPS=false \
  DJANGO_DATA_DIR=/tmp/data STATIC_ROOT=/tmp/static
mkdir -p /tmp/data
cp -r /src/app /tmp/app 2>/dev/null && find /tmp/app -name __pycache__ -prune -exec rm -rf {} +

# Fallback project: Django 1.11 + channels 2, one /healthz view, channels-redis layer.
mkdir -p /tmp/tiny/tiny
cat >/tmp/tiny/tiny/settings.py <<'EOF'
import os
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "tiny.urls"
DATABASES = {}
ASGI_APPLICATION = "tiny.routing.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                              "CONFIG": {"hosts": [("127.0.0.1", 6379)]}}}
LOGGING = {"version": 1, "handlers": {"err": {"class": "logging.StreamHandler"}},
           "loggers": {"django": {"handlers": ["err"], "level": "ERROR"}}}
EOF
cat >/tmp/tiny/tiny/urls.py <<'EOF'
from django.conf.urls import url
from django.http import JsonResponse
urlpatterns = [url(r"^healthz$", lambda request: JsonResponse({"status": "ok"}))]
EOF
echo 'from channels.routing import ProtocolTypeRouter
application = ProtocolTypeRouter({})  # channels 2 adds "http": AsgiHandler' >/tmp/tiny/tiny/routing.py
echo 'import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tiny.settings")
django.setup()
from channels.routing import get_default_application
application = get_default_application()' >/tmp/tiny/tiny/asgi.py
touch /tmp/tiny/tiny/__init__.py

passed=0 failed=0
for scenario in "$@"; do
  case "$scenario" in
    legacy) lock=legacy patches=() expect="200 500 500 500 500 500" ;;
    legacy-patched) lock=legacy expect="200 200 200 200 200 200"
      patches=(django-1.11-basehandler-middleware-lists channels-redis-2.3-receive-lock-cancelled
               channels-redis-2.3-receive-lock-wait-cancelled daphne-2.2-asyncio-cancellederror
               channels-2.1-asyncio-cancellederror) ;;
    legacy-fixed) lock=legacy-fixed patches=(daphne-2.5-asyncio-cancellederror) expect="200 200 200 200 200 200" ;;
  esac
  echo "=== $scenario: $lock.txt, patches: ${patches[*]:-none}"
  venv=/opt/$scenario
  python3 -m venv "$venv"
  t0=$(date +%s%N)
  "$venv/bin/pip" install -q --require-hashes -r "/src/app/requirements/$lock.txt"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "install: $((ms / 1000)).$((ms % 1000 / 100)) s (pip $("$venv/bin/pip" --version | cut -d' ' -f2))"
  echo "pip check: $("$venv/bin/pip" check 2>&1)"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for p in "${patches[@]}"; do
    if ! (cd "$site" && patch -p1 --forward --quiet <"/src/roles/app/files/patches/$p.patch"); then
      echo "patch $p does not apply"; exit 1
    fi
    echo "patched: $p"
  done
  "$venv/bin/python" -c 'import django, channels, daphne, channels_redis, asgiref, twisted
print("versions: Django", django.get_version(), "channels", channels.__version__, "daphne", daphne.__version__,
      "channels-redis", channels_redis.__version__, "asgiref", asgiref.__version__, "Twisted", twisted.__version__)'

  if [ "$LEGACY_PROJECT" = tiny ]; then
    dir=/tmp/tiny module=tiny.asgi:application
  elif [ -f /tmp/app/devops/asgi.py ] && (cd /tmp/app && "$venv/bin/python" -c 'import devops.asgi') 2>/tmp/import.err; then
    dir=/tmp/app module=devops.asgi:application
  else
    echo "bundled app does not import here: $(tail -1 /tmp/import.err 2>/dev/null)"
    dir=/tmp/tiny module=tiny.asgi:application
  fi
  echo "serving $module from $dir"
  (cd "$dir" && exec "$venv/bin/daphne" -b 127.0.0.1 -p 8000 "$module") >/tmp/daphne.log 2>&1 &
  pid=$!
  # Wait for the port with a bare TCP connect: an HTTP probe would use up the first request.
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break; sleep 0.1; done
  codes=""
  for _ in 1 2 3 4 5 6; do
    codes+="$(curl -s -o /dev/null -m 10 -w '%{http_code}' http://127.0.0.1:8000/healthz) "
  done
  codes=${codes% }
  kill "$pid" && wait "$pid" 2>/dev/null || true
  echo "GET /healthz x6 through daphne: $codes"
  grep -m1 'TypeError' /tmp/daphne.log | sed 's/^/daphne log: /' || true
  if [ "$codes" = "$expect" ]; then
    echo "PASS $scenario"; passed=$((passed + 1))
  else
    echo "FAIL $scenario: expected $expect"; tail -20 /tmp/daphne.log; failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
INNER
