"""Stack configurations: extra vars of site.yml, each converged once and measured by the benchmarks that need it.

"baseline" pins the defaults as they were before the tuning, so every run measures before and after side by
side; "default" is the roles' defaults now.
"""

CONFIGS = {
    "default": {},
    "baseline": {
        "app_channel_layer": "redis",
        "asgi_server": "daphne",
        "asgi_processes": 2,
        "uwsgi_processes": 2,
        "uwsgi_threads": 2,
        "uwsgi_max_requests": 5000,
        "uwsgi_max_requests_delta": 500,
    },
    "daphne-core": {"asgi_server": "daphne", "app_channel_layer": "redis"},
    "daphne-pubsub": {"asgi_server": "daphne", "app_channel_layer": "redis-pubsub"},
    "daphne-pubsub-1proc": {"asgi_server": "daphne", "app_channel_layer": "redis-pubsub", "asgi_processes": 1},
    "daphne-pubsub-4proc": {"asgi_server": "daphne", "app_channel_layer": "redis-pubsub", "asgi_processes": 4},
    "uvicorn-core": {"asgi_server": "uvicorn", "app_channel_layer": "redis"},
    # uvicorn's legacy websocket implementation (the asgi role's default before websockets-sansio).
    "uvicorn-pubsub": {"asgi_server": "uvicorn", "app_channel_layer": "redis-pubsub", "asgi_uvicorn_ws": "websockets"},
    "uvicorn-sansio": {
        "asgi_server": "uvicorn",
        "app_channel_layer": "redis-pubsub",
        "asgi_uvicorn_ws": "websockets-sansio",
    },
}
FANOUT_CONFIGS = ["default", "baseline", "uvicorn-pubsub", "uvicorn-sansio"]
HTTP_CONFIGS = ["default", "baseline"]
