"""gunicorn settings of the web app (deploy/systemd/oblako-web.service runs
`gunicorn --config /opt/oblako/deploy/gunicorn.conf.py 'app:create_app()'`).

Every value can be overridden on the command line; WEB_BIND and WEB_WORKERS from the
environment. nginx (deploy/nginx/oblako.conf) sits in front: it buffers slow clients' uploads
and downloads, so a few threads per worker are enough.
"""

import os

bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_WORKERS", "3"))
worker_class = "gthread"
threads = 4
timeout = 120  # an upload (up to MAX_DOCUMENT_BYTES) is checked by content inside the request
graceful_timeout = 30
# Each worker creates the app itself (no preload): `systemctl reload oblako-web` (SIGHUP) then
# starts workers on the new code, one release's upgrade without dropping a request.
preload_app = False
# The app writes one JSON line per request itself (app/ops/requests.py): no access log here.
accesslog = None
errorlog = "-"
# X-Forwarded-Proto from nginx on this host sets the scheme; the client's address is taken by
# the app's ProxyFix (TRUSTED_PROXIES), which also serves `make run`.
forwarded_allow_ips = "127.0.0.1,::1"


def child_exit(server, worker):
    # /metrics sums every worker's file in PROMETHEUS_MULTIPROC_DIR: a dead worker's counts
    # stay (they happened), its live gauges go.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
