"""Sign-in throttling shared by every web process on one Redis, in its own namespace there.

Two web processes started separately (two interpreters, as two hosts or two gunicorn masters
would be) serve the app on the test database and the test Redis with the same SECRET_KEY.
Guesses for one account alternate between them: the limit holds for the pair, not per process.
"""

from __future__ import annotations

import pytest
import redis
from flask import Flask

from tests.conftest import TEST_PASSWORD
from tests.web_process import HttpClient

TOO_MANY_RU = "Слишком много попыток входа"


def sign_in(client: HttpClient, username: str, password: str):
    token = client.csrf_token("/login/")
    return client.post("/login/", {"username": username, "password": password, "csrf_token": token})


@pytest.mark.once
def test_failures_count_across_two_web_processes(app, make_staff, web_process_factory):
    username = make_staff("Manager")
    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    hosts = [HttpClient(web_process_factory().url), HttpClient(web_process_factory().url)]

    for attempt in range(limit):  # wrong passwords, alternately to each process
        answer = sign_in(hosts[attempt % 2], username, "Wrong-password-1")
        assert answer.status == 302, (attempt, answer.status)
        assert "/login/" in answer.headers["Location"]

    # The next attempt is refused whichever process it reaches, the right password included.
    for host in hosts:
        answer = sign_in(host, username, TEST_PASSWORD)
        assert answer.status == 303, answer.status
        assert TOO_MANY_RU in host.get("/login/").text
        assert host.get("/notifications/").status == 302  # not signed in

    # A third interpreter (this one) reads the same counter for the account.
    from app.throttle import get_throttle

    with app.app_context():
        assert not get_throttle().allowed(username, "192.0.2.1")


def _throttle(app: Flask, secret: str):
    from app.throttle import LoginThrottle

    other = Flask("another_deployment")
    other.config.update(
        SECRET_KEY=secret,
        RATELIMIT_STORAGE_URI=app.config["RATELIMIT_STORAGE_URI"],
        LOGIN_FAILURES_PER_ACCOUNT=app.config["LOGIN_FAILURES_PER_ACCOUNT"],
        LOGIN_FAILURES_PER_IP=app.config["LOGIN_FAILURES_PER_IP"],
    )
    return LoginThrottle(other)


@pytest.mark.no_db
def test_reset_clears_only_its_own_namespace(app, redis_url):
    from app.throttle import get_throttle

    limit = int(app.config["LOGIN_FAILURES_PER_ACCOUNT"].split("/")[0])
    store = redis.Redis.from_url(redis_url)
    # Another deployment on the same Redis, and keys of some other program there.
    other = _throttle(app, "another-deployment-secret-of-32-bytes")
    foreign = ["LIMITS:LIMITER/someone-elses/1/1/minute", "another-app:state"]
    try:
        for key in foreign:
            store.set(key, "kept")
        with app.app_context():
            ours = get_throttle()
            assert ours.namespace != other.namespace
            for _ in range(limit):
                ours.failed("ivanov", "192.0.2.10")
                other.failed("ivanov", "192.0.2.10")
            assert not ours.allowed("ivanov", "192.0.2.10")

            ours.reset()

            assert ours.allowed("ivanov", "192.0.2.10")
        assert not other.allowed("ivanov", "192.0.2.10")  # its failures still count
        assert [store.get(key) for key in foreign] == [b"kept", b"kept"]
    finally:
        other.reset()
        store.delete(*foreign)


@pytest.mark.no_db
def test_the_namespace_is_the_same_in_every_interpreter(app):
    """Derived from the secret by a keyed digest, not by the per-process salted hash()."""
    import subprocess
    import sys

    from app.throttle import namespace_for

    secret = str(app.config["SECRET_KEY"])
    code = "import sys; from app.throttle import namespace_for; print(namespace_for(sys.argv[1]))"
    elsewhere = subprocess.run(
        [sys.executable, "-c", code, secret], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert elsewhere == namespace_for(secret)
    assert secret not in elsewhere
