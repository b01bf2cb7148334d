"""Per-connection limits and payload checks (contract: "Events" and "Over limits")."""

from __future__ import annotations

import time
from collections import deque
from typing import Any


class TokenBucket:
    """`capacity` events at once, refilled at `rate` per second.

    The contract's chat limit (5 messages / 5 s burst, 60 / min) is one bucket of 5 refilled at
    1 per second: a burst of 5, then at most one a second, which is 60 a minute."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FloodGate:
    """At most `events` events in any `window` seconds (sliding): a client over it is cut off."""

    __slots__ = ("events", "stamps", "window")

    def __init__(self, events: int, window: float) -> None:
        self.events = events
        self.window = window
        self.stamps: deque[float] = deque(maxlen=events)

    def allow(self) -> bool:
        now = time.monotonic()
        if len(self.stamps) == self.events and now - self.stamps[0] < self.window:
            return False
        self.stamps.append(now)
        return True


class BadRequest(Exception):
    """A malformed payload: the ack says `bad_request`, the socket stays connected."""


def text_field(data: dict[str, Any], key: str, *, max_len: int, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > max_len or not storable(value):
        raise BadRequest(key)
    return value


def storable(value: str) -> bool:
    """Text a database takes: no NUL, and valid Unicode (JSON's "\\ud800" escape decodes to a
    lone surrogate that no UTF-8 column stores — it failed a whole batch of other people's
    messages with it)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def int_field(data: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    value = data.get(key)
    # bool is an int in Python; JSON true is not a message id.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > 2**62:
        raise BadRequest(key)
    return value
