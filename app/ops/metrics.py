"""Prometheus metrics of the web app: request latency by endpoint, and the service's backlog.

Latency is a histogram observed by every request (app/ops/requests.py). Under gunicorn each
worker is its own process: with PROMETHEUS_MULTIPROC_DIR set (the systemd unit points it at a
runtime directory emptied at every start) prometheus-client keeps each process's values in a
file there and a scrape sums the files, so whichever worker answers reports all of them.
Without it (`make run`, the tests) the values live in this process.

The backlog is read from the database and the queue at scrape time, never counted in memory:
a few aggregate queries, whatever the size of the tables and however many processes run.

  oblako_outbox_messages{channel,status}   SMS / e-mail queued (not yet sent) and failed
  oblako_outbox_retrying{channel}          queued ones that have failed at least once
  oblako_applications_overdue              applications still waiting for the doctor's answer
                                           past their due_by (the service-level promise)
  oblako_jobs_pending                      jobs waiting in the Huey queue
  oblako_metrics_errors{part}              1 when a part could not be read for this scrape
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# This process's own metrics; a scrape collects them from here or, under gunicorn, from the
# files of every worker. Created once per process (create_app() may run several times).
_local = CollectorRegistry(auto_describe=True)
REQUEST_SECONDS = Histogram(
    "oblako_http_request_duration_seconds",
    "Time to answer a request, by endpoint (the view, not the URL) and method.",
    ["endpoint", "method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=_local,
)


def observe_request(endpoint: str, method: str, seconds: float) -> None:
    REQUEST_SECONDS.labels(endpoint=endpoint, method=method).observe(seconds)


class BacklogCollector(Collector):
    """Reads the backlog figures when scraped (inside the request's app context)."""

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "oblako_metrics_errors", "1 when a part could not be read now.", labels=["part"]
        )
        for part, read in (
            ("outbox", _outbox),
            ("applications", _overdue_applications),
            ("jobs", _jobs),
        ):
            try:
                yield from read()
                errors.add_metric([part], 0)
            except Exception:
                log.exception("metrics: could not read %s", part)
                errors.add_metric([part], 1)
                from app.extensions import db

                db.session.rollback()
        yield errors


def _outbox() -> Iterator[Metric]:
    from app.extensions import db
    from models import OutboundChannel, OutboundMessage, OutboundStatus

    m = OutboundMessage
    open_statuses = (OutboundStatus.QUEUED.value, OutboundStatus.FAILED.value)
    counts = {(c.value, s): 0 for c in OutboundChannel for s in open_statuses}
    retrying = {c.value: 0 for c in OutboundChannel}
    rows = db.session.execute(
        select(m.channel, m.status, func.count(), func.sum(case((m.attempts > 0, 1), else_=0)))
        .where(m.status.in_(open_statuses))
        .group_by(m.channel, m.status)
    )
    for channel, status, count, tried in rows:
        counts[(channel, status)] = int(count)
        if status == OutboundStatus.QUEUED.value:
            retrying[channel] = int(tried or 0)
    messages = GaugeMetricFamily(
        "oblako_outbox_messages",
        "Outbox messages not delivered: queued (waiting or retrying) and failed for good.",
        labels=["channel", "status"],
    )
    for (channel, status), count in sorted(counts.items()):
        messages.add_metric([channel, status], count)
    yield messages
    gauge = GaugeMetricFamily(
        "oblako_outbox_retrying",
        "Queued outbox messages whose delivery has failed at least once.",
        labels=["channel"],
    )
    for channel, count in sorted(retrying.items()):
        gauge.add_metric([channel], count)
    yield gauge


def _overdue_applications() -> Iterator[Metric]:
    from app.extensions import db
    from app.reports.labels import QUEUE_STATUSES
    from app.reports.service_level import sla_outcome
    from models import Consultation, utcnow

    # The service-level report's own rule (sla_outcome): "overdue" and still waiting now.
    count = db.session.scalar(
        select(func.count())
        .select_from(Consultation)
        .where(
            Consultation.due_by.is_not(None),
            Consultation.status.in_([s.value for s in QUEUE_STATUSES]),
            sla_outcome(utcnow()) == "overdue",
        )
    )
    yield GaugeMetricFamily(
        "oblako_applications_overdue",
        "Applications still waiting for the doctor's answer after their due date.",
        value=int(count or 0),
    )


def _jobs() -> Iterator[Metric]:
    from app.tasks import huey

    yield GaugeMetricFamily(
        "oblako_jobs_pending", "Jobs waiting in the queue.", value=int(huey.pending_count())
    )


def render() -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_SECONDS)
    registry.register(BacklogCollector())
    return generate_latest(registry)
