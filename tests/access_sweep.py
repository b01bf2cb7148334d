"""The access matrix's machinery (tests/test_access_matrix.py): which routes are swept and
how their URLs are filled with B's identifiers, the personas, what an answer may not carry, B's
data before and after, and `sweep`, which requests every route as one persona."""

from __future__ import annotations

import hashlib
import json
import re
import traceback
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect, select
from werkzeug.routing import Rule

from tests.access_world import (
    B_CONSULTATION_ID,
    B_DOCUMENT_ID,
    B_NOTIFICATION_ID,
    B_PATIENT_ID,
    B_PUBLIC_ID,
    EVERYTHING,
    MARKERS,
    World,
)
from tests.conftest import csrf_token, login

# --- routes ---------------------------------------------------------------------------------

# Not swept: static files, the language switch and the forms that sign in, out and up.
EXCLUDED_ENDPOINTS = frozenset(
    {
        "static",
        "appbuilder.static",
        "LocaleView.index",
        "OblakoAuthDBView.login",
        "OblakoAuthDBView.logout",
        "RegistrationView.register",
        "RegistrationView.code",
        "RegistrationView.resend",
        "SecurityApi.login",
    }
)
# Open to visitors on purpose. Anything else must send a visitor to sign in.
# The guest's pages of the consultation room: a one-time invite link, then the session it was
# traded for, is the key (app/media.py checks the invite on every request).
PUBLIC_ENDPOINTS = frozenset(
    {
        "HomeView.index",
        "UtilView.back",
        "MediaGuestView.join",
        "MediaGuestView.room",
        "MediaGuestView.token",
        # The invitation SMS's one-time sign-in link: its secret is the key (app/sign_in_links).
        "SignInLinkView.open",
        "SignInLinkView.use",
        # For monitors (views/ops.py): /healthz says ok per part, /metrics answers loopback
        # only (tests/test_ops.py refuses another address); neither shows a patient.
        "ops.healthz",
        "ops.prometheus_metrics",
        # The installable app (app/pwa.py): the same for everyone, no user data.
        "pwa.manifest",
        "pwa.offline",
        "pwa.service_worker",
    }
)

# --- personas -------------------------------------------------------------------------------

# What each persona must never see of B. Admin sees everything (app/access.py).
FORBIDDEN: dict[str, frozenset[str]] = {
    "anonymous": EVERYTHING,
    "patient_a": EVERYTHING,
    "doctor_c2": EVERYTHING,
    "duty_doctor": EVERYTHING,
    "manager": EVERYTHING - {"surname"},
    "doctor_c1": frozenset({"notification"}),
    "admin": frozenset(),
}
PERSONAS = list(FORBIDDEN)

GARBAGE = {
    # Form fields of every shape, with ownership fields pointing at B (never taken from forms).
    "name": "мусор",
    "surname": "Мусорова",
    "note": "мусор",
    "status": "completed",
    "kind": "duty",
    "active": "y",
    "patient": str(B_PATIENT_ID),
    "patient_id": str(B_PATIENT_ID),
    "consultation_id": str(B_CONSULTATION_ID),
    "document_id": str(B_DOCUMENT_ID),
    "user_id": "1",
    "doctor_id": "1",
    "document_type": "1",
    "pk": str(B_PATIENT_ID),
    "ids": str(B_DOCUMENT_ID),
    "action": "delete",
    "garbage": "\x00<script>'\"%s{{7*7}}",
}


def signed_in(app: Flask, username: str | None) -> FlaskClient:
    client = app.test_client()
    if username is not None:
        response = login(client, username)
        assert response.status_code == 302, f"{username} could not sign in"
        assert not urlsplit(response.headers["Location"]).path.startswith("/login")
    return client


# ---------------------------------------------------------------------------------------------
# Routes and their URLs
# ---------------------------------------------------------------------------------------------

_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-zA-Z_]\w*)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def swept_rules(app: Flask) -> list[Rule]:
    rules = (r for r in app.url_map.iter_rules() if r.endpoint not in EXCLUDED_ENDPOINTS)
    return sorted(rules, key=lambda r: (r.rule, r.endpoint))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _accepts(converter: str | None, value: str) -> bool:
    if converter == "uuid":
        return _is_uuid(value)
    if converter == "int":
        return value.isdigit()
    return True


def urls_for(rule: Rule, candidates: list[str]) -> list[str]:
    """The rule with every argument set to each candidate it accepts, the others held fixed.

    Held-fixed rather than the full product: the two-argument FAB `action` routes would
    otherwise cost a hundred requests each without reaching any code the single sweep misses.
    """
    arguments = [(m["name"], m["converter"]) for m in _ARGUMENT.finditer(rule.rule)]
    if not arguments:
        return [rule.rule]
    accepted = {name: [v for v in candidates if _accepts(conv, v)] for name, conv in arguments}
    base = {name: values[0] for name, values in accepted.items()}
    combos: list[dict[str, str]] = []
    for name, values in accepted.items():
        for value in values:
            combo = {**base, name: value}
            if combo not in combos:
                combos.append(combo)

    def build(values: dict[str, str]) -> str:
        return _ARGUMENT.sub(lambda m: quote(values[m["name"]], safe=""), rule.rule)

    return [build(c) for c in combos]


def view_of(app: Flask, endpoint: str):
    """The FAB view (or API) object behind an endpoint, or None for plain Flask routes."""
    prefix = endpoint.split(".", 1)[0]
    for view in app.appbuilder.baseviews:
        if getattr(view, "endpoint", None) == prefix:
            return view
    return None


def patient_view_names() -> list[str]:
    """View-name patterns the Patient role holds any permission on, from the role matrix."""
    from app.permissions import PATIENT, ROLE_MATRIX

    return [view for view, _perm in ROLE_MATRIX[PATIENT]]


def is_staff_endpoint(app: Flask, endpoint: str) -> bool:
    """A protected endpoint of a view on which the Patient role holds no permission at all."""
    if endpoint in PUBLIC_ENDPOINTS:
        return False
    view = view_of(app, endpoint)
    name = getattr(view, "class_permission_name", None) or endpoint.split(".", 1)[0]
    return not any(re.match(pattern, name) for pattern in patient_view_names())


# ---------------------------------------------------------------------------------------------
# Looking at answers
# ---------------------------------------------------------------------------------------------


def _variants(marker: str) -> tuple[str, ...]:
    """The marker as it may travel: plain/HTML, JSON with \\u escapes, percent-encoded."""
    return tuple(
        {
            marker.lower(),
            json.dumps(marker)[1:-1].lower(),
            json.dumps(marker, ensure_ascii=False)[1:-1].lower(),
            quote(marker).lower(),
            quote(marker, safe="").lower(),
        }
    )


VARIANTS = {name: _variants(marker) for name, marker in MARKERS.items()}


def markers_in(response, names: frozenset[str]) -> list[str]:
    if not names:
        return []
    body = response.get_data().decode("utf-8", "replace")
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    haystack = f"{body}\n{headers}".lower()
    return [name for name in sorted(names) if any(v in haystack for v in VARIANTS[name])]


def _first_line(exc: BaseException) -> str:
    lines = traceback.format_exception_only(exc)[-1].strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def redirects_to_login(response) -> bool:
    return response.status_code in (301, 302, 303) and urlsplit(
        response.headers.get("Location", "")
    ).path.startswith("/login")


def b_snapshot(app: Flask) -> dict:
    """Everything of B a request could damage: rows, links and the stored files' digests."""
    from app.documents.access import document_path
    from app.extensions import db
    from models import Consultation, MedicalDocument, Notification, OblakoUser, Patient

    def columns(obj) -> dict:
        if obj is None:
            return {"row": None}
        return {a.key: getattr(obj, a.key) for a in inspect(obj).mapper.column_attrs}

    with app.app_context():
        patient = db.session.get(Patient, B_PATIENT_ID)
        user = db.session.get(OblakoUser, patient.user_id) if patient else None
        documents = db.session.execute(
            select(MedicalDocument)
            .where(MedicalDocument.patient_id == B_PATIENT_ID)
            .order_by(MedicalDocument.id)
        ).scalars()
        consultations = db.session.execute(
            select(Consultation)
            .where(Consultation.patient_id == B_PATIENT_ID)
            .order_by(Consultation.id)
        ).scalars()
        snapshot = {
            "patient": columns(patient),
            "user": {
                **{
                    k: v for k, v in columns(user).items() if k not in ("last_login", "login_count")
                },
                "roles": sorted(r.name for r in user.roles) if user else None,
            },
            "notification": columns(db.session.get(Notification, B_NOTIFICATION_ID)),
        }
        for doc in documents:
            path = document_path(doc)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            snapshot[f"document {doc.id}"] = {**columns(doc), "file sha256": digest}
        for consultation in consultations:
            snapshot[f"consultation {consultation.id}"] = {
                **columns(consultation),
                "documents": sorted(d.id for d in consultation.documents),
            }
        db.session.rollback()
        return snapshot


def snapshot_diff(before: dict, after: dict) -> list[str]:
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None or new is None:
            changes.append(f"{key}: {'appeared' if old is None else 'disappeared'}")
            continue
        fields = sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f))
        changes.append(f"{key}: " + ", ".join(f"{f} {old.get(f)!r}→{new.get(f)!r}" for f in fields))
    return changes


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    persona: str
    requests: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(f"{message} [as {self.persona}]")

    def report(self) -> str:
        lines = [f"access matrix as {self.persona}: {self.requests} requests"]
        for kind, messages in self.problems.items():
            lines.append(f"--- {kind} ({len(messages)})")
            lines.extend(f"  {m}" for m in messages[:60])
            if len(messages) > 60:
                lines.append(f"  ... and {len(messages) - 60} more")
        return "\n".join(lines)


def sweep(app: Flask, world: World, persona: str) -> Sweep:
    client = signed_in(app, world.usernames[persona])
    token_page = "/login/" if persona == "anonymous" else "/account/password/"
    token = csrf_token(client, token_page)
    forbidden = FORBIDDEN[persona]
    result = Sweep(persona)
    query_probe = "?" + urlencode(
        {
            "patient": str(B_PUBLIC_ID),
            "patient_id": B_PATIENT_ID,
            "pk": B_PATIENT_ID,
            "id": B_PATIENT_ID,
            "page": 2,
        }
    )
    baseline = b_snapshot(app)

    def request(rule: Rule, method: str, url: str, data: dict | None = None) -> None:
        label = f"{method} {url} ({rule.endpoint})"
        result.requests += 1
        try:
            response = client.open(url, method=method, data=data)
        except Exception as exc:  # an unhandled error is what a user gets as a 500
            result.problem("500", f"{label}: {_first_line(exc)}")
            return
        try:
            check(rule, method, label, response)
        finally:
            response.close()

    def check(rule: Rule, method: str, label: str, response) -> None:
        status = response.status_code
        if status >= 500:
            result.problem("500", f"{label}: answered {status}")
        for name in markers_in(response, forbidden):
            result.problem("leak", f"{label}: answered {status} carrying B's {name}")
        protected = rule.endpoint not in PUBLIC_ENDPOINTS
        if persona == "anonymous" and protected:
            if rule.rule.startswith("/api/"):
                if status != 401:
                    result.problem("anonymous not refused", f"{label}: {status}, expected 401")
            elif not redirects_to_login(response):
                where = response.headers.get("Location", "")
                result.problem(
                    "anonymous not refused",
                    f"{label}: {status} {where}".strip() + ", expected 302 to /login/",
                )
        if (
            persona == "patient_a"
            and method == "GET"
            and is_staff_endpoint(app, rule.endpoint)
            and not (status in (403, 404) or redirects_to_login(response))
        ):
            result.problem(
                "patient reaches a staff screen",
                f"{label}: {status}, expected 302 to /login/, 403 or 404",
            )

    for rule in swept_rules(app):
        urls = urls_for(rule, world.candidates)
        if "GET" in rule.methods:
            for url in urls:
                request(rule, "GET", url)
            if not rule.arguments:
                request(rule, "GET", url + query_probe)
        if "POST" in rule.methods:
            request(rule, "POST", urls[0], {"csrf_token": token})
            for url in urls:
                request(rule, "POST", url, {**GARBAGE, "csrf_token": token})
        # FAB's delete answers GET too, so every route is followed by a look at B's data.
        changes = snapshot_diff(baseline, b_snapshot(app))
        if changes:
            result.problem(
                "B's data changed", f"after {rule.rule} ({rule.endpoint}): " + "; ".join(changes)
            )
            baseline = b_snapshot(app)  # report each damaging route once

    # The sweep must not have quietly signed the persona out: a refused-everything client
    # would make the leak checks pass for the wrong reason.
    if persona != "anonymous":
        status = client.get("/notifications/").status_code
        assert status == 200, f"{persona} was signed out during the sweep ({status})"
    return result
