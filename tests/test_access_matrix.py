"""The access matrix: every route, as every persona, aimed at a patient they must not see.

Patient B («Секретова») is the target. B has a centre_request consultation at centre C1 holding
a PDF with a unique name, note and byte string, a second such PDF in no consultation (so that
it could be deleted), and a notification. Every route in app.url_map (HTML views, FAB CRUD,
downloads and previews, the REST API; not static files, FAB's /lang/ and the sign-in / sign-out /
registration forms, covered by their own tests) is requested as: anonymous, Admin, Manager, a
Doctor of C1, a Doctor of an unrelated centre C2, an unrelated DutyDoctor and Patient A. Every
URL parameter is filled with each of B's identifiers (integer keys and public UUIDs of the
patient, the documents, the consultation and the notification), a random UUID and a large integer
(past PostgreSQL's INTEGER); parameterless GET routes are also asked with B's identifiers in the
query string. GET routes are requested; POST routes are posted with a valid
CSRF token, once empty and once with garbage that names B as the owner.

Asserted for every persona:
 1. no answer is a 500 (an exception inside the app counts as one);
 2. no response (body or headers, plain, JSON-escaped or URL-encoded) carries a marker of B the
    persona may not see — the Manager may see B's name but not the document; Doctor C1 may see
    the document (and positively can: test_positive_controls) but not B's notification;
 3. after each route's requests, B's patient and user rows, documents (rows, links and the files'
    SHA-256) and consultation are unchanged;
 4. Patient A gets 302-to-login / 403 / 404 on every GET of a staff view — the staff views are
    derived from app.permissions.ROLE_MATRIX (not a hand list), so new routes are covered;
 5. anonymous gets 302 to the sign-in page (HTML) or 401 (API) on every route but the public ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, inspect, select
from werkzeug.routing import Rule

from tests.conftest import csrf_token, login, patient_username

# --- B's markers: none may reach a persona who must not see B ----------------------------------

SURNAME = "Секретова"
DOC_NAME = "секрет-бета.pdf"
LOOSE_DOC_NAME = "секрет-бета-копия.pdf"  # B's second document, in no consultation: deletable
DOC_NOTE = "тайная-заметка-Б"
NOTIFICATION_TEXT = "уведомление-для-Б"
PDF_BYTES = "OblakoSecretPdfOfPatientBq7x2k9"  # alphanumeric: pypdf escapes the rest

MARKERS = {
    "surname": SURNAME,
    "document name": DOC_NAME.removesuffix(".pdf"),  # the stem: both of B's documents
    "document note": DOC_NOTE,
    "notification": NOTIFICATION_TEXT,
    "pdf bytes": PDF_BYTES,
}
EVERYTHING = frozenset(MARKERS)

# B's rows get explicit keys, distinct and far above any other row's: a FAB CRUD route given
# "B's id" can then only reach B's row, never (as Admin or Manager legitimately may) delete an
# account, role or centre that happens to share a small integer with it.
B_PATIENT_ID = 70_001
B_DOCUMENT_ID = 70_002
B_CONSULTATION_ID = 70_003
B_NOTIFICATION_ID = 70_004
B_LOOSE_DOCUMENT_ID = 70_005
LARGE_INT = "9999999999"  # past a 32-bit integer column: PostgreSQL refuses it in a query

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


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


def secret_pdf() -> bytes:
    """A real PDF (it passes the upload's parser) carrying PDF_BYTES in its metadata."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": PDF_BYTES})
    out = io.BytesIO()
    writer.write(out)
    data = out.getvalue()
    assert PDF_BYTES.encode() in data
    return data


def plain_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@contextmanager
def explicit_id(model: type, value: int) -> Iterator[None]:
    """Give the next inserted row of `model` the primary key `value` (services build the row)."""

    def assign(_mapper, _connection, target) -> None:
        if target.id is None:
            target.id = value

    event.listen(model, "before_insert", assign)
    try:
        yield
    finally:
        event.remove(model, "before_insert", assign)


@dataclass
class World:
    usernames: dict[str, str | None]
    b_username: str
    b_patient_public_id: str
    b_document_public_id: str
    b_consultation_public_id: str
    b_notification_public_id: str
    b_loose_document_public_id: str
    candidates: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def empty_storage(app):
    import shutil

    shutil.rmtree(Path(app.config["STORAGE_DIR"]) / "documents", ignore_errors=True)


@pytest.fixture
def world(app, make_patient, make_doctor, make_center, make_staff) -> World:
    from app.catalogue import load_catalogue
    from app.documents.upload import store_document
    from app.extensions import db
    from models import Consultation, Doctor, MedicalDocument, Notification, Patient

    c1, c2 = make_center("Центр Один"), make_center("Центр Два")
    doctor_c1, doctor_c2 = make_doctor(center_id=c1), make_doctor(center_id=c2)
    duty = make_doctor(is_duty=True)
    admin, manager = make_staff("Admin"), make_staff("Manager")
    patient_a = make_patient(surname="Обычная")
    other = make_patient(surname="Другова")  # C2's own patient: C2's screens are not empty
    with explicit_id(Patient, B_PATIENT_ID):
        patient_b = make_patient(surname=SURNAME)
    assert patient_b == B_PATIENT_ID

    with app.app_context():
        types = load_catalogue()
        a, b = db.session.get(Patient, patient_a), db.session.get(Patient, patient_b)
        store_document(
            a,
            by=a.user,
            stream=io.BytesIO(plain_pdf()),
            filename="моя-выписка.pdf",
            document_type=types["discharge"],
            note="заметка А",
        )
        with explicit_id(MedicalDocument, B_DOCUMENT_ID):
            b_doc = store_document(
                b,
                by=b.user,
                stream=io.BytesIO(secret_pdf()),
                filename=DOC_NAME,
                document_type=types["discharge"],
                note=DOC_NOTE,
            )
            db.session.flush()
        with explicit_id(MedicalDocument, B_LOOSE_DOCUMENT_ID):
            b_loose = store_document(
                b,
                by=b.user,
                stream=io.BytesIO(secret_pdf()),
                filename=LOOSE_DOC_NAME,
                document_type=types["lab"],
                note=DOC_NOTE,
            )
            db.session.flush()
        assert (b_doc.id, b_doc.original_name, b_doc.note) == (B_DOCUMENT_ID, DOC_NAME, DOC_NOTE)
        assert (b_loose.id, b_loose.original_name) == (B_LOOSE_DOCUMENT_ID, LOOSE_DOC_NAME)
        b_consultation = Consultation(
            id=B_CONSULTATION_ID,
            kind="centre_request",
            status="requested",
            patient_id=b.id,
            center_id=c1,
            complaints="жалобы Б",
        )
        b_consultation.documents.append(b_doc)
        duty_id = db.session.execute(select(Doctor.id).where(Doctor.id == duty)).scalar_one()
        db.session.add_all(
            [
                b_consultation,
                Consultation(
                    kind="centre_request", status="requested", patient_id=other, center_id=c2
                ),
                Consultation(kind="duty", status="scheduled", patient_id=a.id, doctor_id=duty_id),
                Notification(user_id=a.user_id, kind="test", text="уведомление-для-А", link="/"),
            ]
        )
        b_notification = Notification(
            id=B_NOTIFICATION_ID,
            user_id=b.user_id,
            kind="test",
            text=NOTIFICATION_TEXT,
            link="/cabinet/documents/",
        )
        db.session.add(b_notification)
        db.session.commit()
        world = World(
            usernames={
                "anonymous": None,
                "admin": admin,
                "manager": manager,
                "doctor_c1": db.session.get(Doctor, doctor_c1).user.username,
                "doctor_c2": db.session.get(Doctor, doctor_c2).user.username,
                "duty_doctor": db.session.get(Doctor, duty).user.username,
                "patient_a": a.phone,
            },
            b_username=b.phone,
            b_patient_public_id=str(b.public_id),
            b_document_public_id=str(b_doc.public_id),
            b_consultation_public_id=str(b_consultation.public_id),
            b_notification_public_id=str(b_notification.public_id),
            b_loose_document_public_id=str(b_loose.public_id),
        )
    assert patient_username(app, patient_b) == world.b_username
    world.candidates = [
        str(B_PATIENT_ID),
        world.b_patient_public_id,
        str(B_DOCUMENT_ID),
        world.b_document_public_id,
        str(B_CONSULTATION_ID),
        world.b_consultation_public_id,
        str(B_NOTIFICATION_ID),
        world.b_notification_public_id,
        str(B_LOOSE_DOCUMENT_ID),
        world.b_loose_document_public_id,
        str(uuid.uuid4()),
        LARGE_INT,
    ]
    return world


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
            "patient": world.b_patient_public_id,
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


@pytest.mark.parametrize("persona", PERSONAS)
def test_access_matrix(app, world, persona):
    started = time.monotonic()
    result = sweep(app, world, persona)
    elapsed = time.monotonic() - started
    assert not result.problems, result.report() + f"\n({elapsed:.1f} s)"


# ---------------------------------------------------------------------------------------------
# The matrix is not vacuous
# ---------------------------------------------------------------------------------------------


def _get(client: FlaskClient, url: str):
    response = client.get(url)
    response.close()
    return response


def test_positive_controls(app, world):
    """Those who may see B do see B: a scope of "deny all" would fail here, not pass."""
    doc = world.b_document_public_id
    pdf = PDF_BYTES.encode()

    for persona in ("doctor_c1", "admin"):
        client = signed_in(app, world.usernames[persona])
        download = client.get(f"/staff/documents/{doc}/download")
        assert download.status_code == 200, f"{persona} cannot download B's document"
        assert pdf in download.get_data(), f"{persona} got something else than B's PDF"
        assert quote(DOC_NAME, safe="") in download.headers["Content-Disposition"]
        download.close()
        show = client.get(f"/staff/documents/{doc}/").get_data(as_text=True)
        assert DOC_NAME in show and DOC_NOTE in show, f"{persona} does not see B's document"
        listing = client.get(f"/staff/documents/?patient={world.b_patient_public_id}")
        assert DOC_NAME in listing.get_data(as_text=True)
        patient = client.get(f"/staff/patients/show/{B_PATIENT_ID}")
        assert patient.status_code == 200 and SURNAME in patient.get_data(as_text=True)

    manager = signed_in(app, world.usernames["manager"])
    assert SURNAME in manager.get("/staff/patients/list/").get_data(as_text=True)

    b = signed_in(app, world.b_username)
    own = b.get(f"/cabinet/documents/{doc}/download")
    assert own.status_code == 200 and pdf in own.get_data(), "B cannot download own document"
    own.close()
    mine = b.get("/cabinet/documents/").get_data(as_text=True)
    assert DOC_NAME in mine and DOC_NOTE in mine
    api = b.get("/api/v1/my/documents/")
    assert api.status_code == 200 and markers_in(api, frozenset({"document name"}))
    assert NOTIFICATION_TEXT in b.get("/notifications/").get_data(as_text=True)

    # Patient A's own pages work (the 404s A gets for B are about B, not a broken cabinet).
    a = signed_in(app, world.usernames["patient_a"])
    for url in ("/cabinet/", "/cabinet/documents/", "/notifications/", "/profile/"):
        assert _get(a, url).status_code == 200, url


def test_every_route_is_swept_and_classified(app):
    """Exclusions stay real, every other route is swept, staff views come from the matrix."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert EXCLUDED_ENDPOINTS <= endpoints, EXCLUDED_ENDPOINTS - endpoints
    assert PUBLIC_ENDPOINTS <= endpoints, PUBLIC_ENDPOINTS - endpoints
    swept = {rule.endpoint for rule in swept_rules(app)}
    assert swept == endpoints - EXCLUDED_ENDPOINTS
    staff = {e for e in swept if is_staff_endpoint(app, e)}
    patient = swept - staff - PUBLIC_ENDPOINTS
    for endpoint in (
        "PatientStaffView.list",
        "StaffDocumentView.download",
        "ConsultationStaffView.show",
        "DoctorView.add",
        "UserDBModelView.list",
        "MenuApi.get_menu_data",
    ):
        assert endpoint in staff, endpoint
    for endpoint in ("CabinetView.index", "MyDocumentView.download", "MyDocumentApi.get_list"):
        assert endpoint in patient, endpoint
    # Every URL argument is filled with B's identifiers, whatever its converter.
    candidates = [str(B_PATIENT_ID), str(uuid.uuid4()), LARGE_INT]
    for rule in swept_rules(app):
        for url in urls_for(rule, candidates):
            assert "<" not in url, url


def test_fab_security_screens_keep_their_actions(app, world):
    """The matrix found FAB's action routes answering 500 on an unknown action name (for
    anyone, anonymous included) and its download/chart routes crashing: views/auth.py fixes
    them. The real actions and the chart still work for the Admin."""
    from flask_appbuilder.security.sqla.models import Role

    from app.extensions import db
    from models import OblakoUser

    with app.app_context():
        admin_id = db.session.execute(
            select(OblakoUser.id).where(OblakoUser.username == world.usernames["admin"])
        ).scalar_one()
        role_id = db.session.execute(select(Role.id).where(Role.name == "Manager")).scalar_one()
    admin = signed_in(app, world.usernames["admin"])
    token = csrf_token(admin, "/account/password/")

    reset = admin.post(f"/users/action/resetpasswords/{admin_id}", data={"csrf_token": token})
    assert reset.status_code == 302
    assert urlsplit(reset.headers["Location"]).path == "/resetpassword/form"
    copy = admin.post(
        "/roles/action_post", data={"csrf_token": token, "action": "copyrole", "rowid": role_id}
    )
    assert copy.status_code == 302
    # FAB's user statistics (Google Charts from a foreign CDN) is not served at all.
    assert _get(admin, "/userstatschartview/chart/").status_code == 404
    assert admin.post("/users/action/nonsense/1", data={"csrf_token": token}).status_code in (
        404,
        405,
    )
    # A visitor is sent to sign in before any action is looked up.
    visitor = app.test_client()
    visitor_token = csrf_token(visitor)
    refused = visitor.post("/users/action/resetpasswords/1", data={"csrf_token": visitor_token})
    assert redirects_to_login(refused)
