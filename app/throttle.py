"""Sign-in throttling per account and per client address, for the form and the API alike.

Failures are counted in the rate-limit storage (memory on the embedded default, Redis when
REDIS_URL is set so that every web worker shares the counters).
"""

from __future__ import annotations

from flask import Flask, current_app
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter


class LoginThrottle:
    def __init__(self, app: Flask) -> None:
        self.storage = storage_from_string(app.config["RATELIMIT_STORAGE_URI"])
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.per_account = parse(app.config["LOGIN_FAILURES_PER_ACCOUNT"])
        self.per_ip = parse(app.config["LOGIN_FAILURES_PER_IP"])
        # Keys are namespaced per app secret so test apps and deployments never share counters.
        self.namespace = str(abs(hash(app.config["SECRET_KEY"])) % 10**8)

    def _keys(self, username: str, ip: str) -> list[tuple[object, str]]:
        return [
            (self.per_account, f"{self.namespace}:acct:{(username or '').strip().lower()}"),
            (self.per_ip, f"{self.namespace}:ip:{ip or '-'}"),
        ]

    def allowed(self, username: str, ip: str) -> bool:
        return all(self.limiter.test(limit, key) for limit, key in self._keys(username, ip))

    def failed(self, username: str, ip: str) -> None:
        for limit, key in self._keys(username, ip):
            self.limiter.hit(limit, key)

    def reset(self) -> None:
        self.storage.reset()


def get_throttle() -> LoginThrottle:
    return current_app.extensions["oblako_login_throttle"]


def init_app(app: Flask) -> None:
    app.extensions["oblako_login_throttle"] = LoginThrottle(app)
