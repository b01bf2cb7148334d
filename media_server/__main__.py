"""`python -m media_server`: serve the socket.io media server on MEDIA_HOST:MEDIA_PORT.

Configuration comes from config.build_config() (the environment), exactly as for the web app.
SIGTERM and SIGINT stop it gracefully: aiohttp closes the sockets (clients reconnect to another
process or to this one once it is back) and the database pool is released.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web

import logs
from config import build_config
from media_server.server import MediaServer


def main() -> None:
    logs.configure()  # JSON lines on stderr (LOG_FORMAT=text for plain ones)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    cfg = build_config()
    server = MediaServer(cfg)
    host, port = cfg["MEDIA_HOST"], int(cfg["MEDIA_PORT"])
    logging.getLogger("media_server").info(
        "media server on http://%s:%s (origins: %s; rooms: %s)",
        host,
        port,
        ",".join(sorted(server.origins)),
        "redis" if cfg.get("MEDIA_REDIS_URL") else "memory",
    )
    # run_app handles SIGINT and SIGTERM (GracefulExit) and runs the cleanup hooks.
    web.run_app(server.app, host=host, port=port, print=None, shutdown_timeout=5)


if __name__ == "__main__":
    sys.exit(main())
