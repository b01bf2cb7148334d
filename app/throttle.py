"""Sign-in throttling per account and per client address, for the form and the API alike.

Failures are counted in the rate-limit storage (memory on the embedded default, Redis when
REDIS_URL is set so that every web worker and every web host shares the counters).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, current_app
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

KEY_PREFIX = "LIMITS:oblako-login"
_NAMESPACE_LABEL = b"oblako/login-throttle/v1"


def namespace_for(secret_key: str | bytes) -> str:
    """A stable name for one deployment's counters: the same on every host and after every
    restart (Python's hash() of a str is salted per process), and the secret is not revealed."""
    secret = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(secret, _NAMESPACE_LABEL, hashlib.sha256).hexdigest()[:24]


class LoginThrottle:
    def __init__(self, app: Flask) -> None:
        uri = app.config["RATELIMIT_STORAGE_URI"]
        # Keys are namespaced per app secret so test apps and deployments never share counters.
        self.namespace = namespace_for(app.config["SECRET_KEY"])
        self.key_prefix = f"{KEY_PREFIX}:{self.namespace}"
        # In Redis every key of this throttle starts with key_prefix, and the storage's reset()
        # deletes that prefix only. A memory storage is this object's own, so reset() is too.
        options = {"key_prefix": self.key_prefix} if uri.startswith(("redis", "valkey")) else {}
        self.storage = storage_from_string(uri, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.per_account = parse(app.config["LOGIN_FAILURES_PER_ACCOUNT"])
        self.per_ip = parse(app.config["LOGIN_FAILURES_PER_IP"])

    def _keys(self, username: str | None, ip: str) -> list[tuple[object, str]]:
        """The counters an attempt touches: the account's (None: no account is named, as for
        an unknown sign-in link) and the client address's."""
        keys = [(self.per_ip, f"{self.namespace}:ip:{ip or '-'}")]
        if username is not None:
            account = f"{self.namespace}:acct:{username.strip().lower()}"
            keys.insert(0, (self.per_account, account))
        return keys

    def allowed(self, username: str | None, ip: str) -> bool:
        return all(self.limiter.test(limit, key) for limit, key in self._keys(username, ip))

    def failed(self, username: str | None, ip: str) -> None:
        for limit, key in self._keys(username, ip):
            self.limiter.hit(limit, key)

    def reset(self) -> None:
        """Forget this namespace's failures (tests, an operator's unlock); nothing else."""
        self.storage.reset()


def get_throttle() -> LoginThrottle:
    return current_app.extensions["oblako_login_throttle"]


def init_app(app: Flask) -> None:
    app.extensions["oblako_login_throttle"] = LoginThrottle(app)
