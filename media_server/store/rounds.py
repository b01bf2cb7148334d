"""A batch's insert in rounds: one row per (author, client id), a repeated key in a later round,
and the results for the ones that went in."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from datetime import datetime
from typing import Any

from media_server.store.messages import SendItem, SendResult


def missing_keys(items: list[SendItem], results: list[Any]) -> set[tuple[int, str]]:
    """(author, client id) of the messages no round stored: a resend, a conflict or closed."""
    return {(it.author_id, it.client_msg_id) for it, r in zip(items, results, strict=True) if not r}


def store_rounds(
    items: list[SendItem], results: list[Any], now: datetime
) -> Generator[list[SendItem], Iterable[tuple[int, int, str]], None]:
    """The rounds of a batch's insert (ChatStore.send_batch drives it): yields the messages to
    insert and receives (id, author, client id) of those that went in. One row per (author,
    client id): the first of each goes in; if its chat was closed, a later one with the same
    key (another consultation) gets its own round. Fills `results` with the stored ones."""
    pending = list(range(len(items)))
    while pending:
        first_of: dict[tuple[int, str], int] = {}
        for i in pending:
            first_of.setdefault((items[i].author_id, items[i].client_msg_id), i)
        stored: set[tuple[int, str]] = set()
        for new_id, author_id, client_msg_id in (yield [items[i] for i in first_of.values()]):
            i = first_of[(author_id, client_msg_id)]
            results[i] = SendResult("stored", items[i].message(new_id, items[i].body, now))
            stored.add((author_id, client_msg_id))
        pending = [
            i
            for i in pending
            if (key := (items[i].author_id, items[i].client_msg_id)) not in stored
            and first_of[key] != i
        ]
