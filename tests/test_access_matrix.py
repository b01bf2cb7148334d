"""The access matrix: every route, as every persona, aimed at a patient they must not see.

Patient B («Секретова») is the target. B has a centre_request consultation at centre C1 holding
a PDF with a unique name, note and byte string, a second such PDF in no consultation (so that
it could be deleted), and a notification. Every route in app.url_map (HTML views, FAB CRUD,
downloads and previews, the REST API; not static files, FAB's /lang/ and the sign-in / sign-out /
registration forms, covered by their own tests) is requested as: anonymous, Admin, Manager, a
Doctor of C1, a Doctor of an unrelated centre C2, an unrelated DutyDoctor and Patient A. Every
URL parameter is filled with each of B's identifiers (B's patient, first document, consultation
and notification share one integer key and one public UUID, the loose document has its own:
tests/access_world.py), a random UUID and a large integer (past PostgreSQL's INTEGER);
parameterless GET routes are also asked with B's identifiers in the query string. GET routes are
requested; POST routes are posted with a valid CSRF token, once empty and once with garbage that
names B as the owner.

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

import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.access_sweep import (
    EXCLUDED_ENDPOINTS,
    PERSONAS,
    PUBLIC_ENDPOINTS,
    is_staff_endpoint,
    markers_in,
    redirects_to_login,
    signed_in,
    sweep,
    swept_rules,
    urls_for,
)
from tests.access_world import (
    B_PATIENT_ID,
    B_PUBLIC_ID,
    DOC_NAME,
    DOC_NOTE,
    LARGE_INT,
    NOTIFICATION_TEXT,
    PDF_BYTES,
    SURNAME,
    World,
    stage_world,
)
from tests.conftest import csrf_token


@pytest.fixture(autouse=True)
def empty_storage(app):
    import shutil

    shutil.rmtree(Path(app.config["STORAGE_DIR"]) / "documents", ignore_errors=True)


@pytest.fixture
def world(app, make_patient, make_doctor, make_center, make_staff) -> World:
    """Patient B and the personas aimed at B: tests/access_world.py."""
    return stage_world(app, make_patient, make_doctor, make_center, make_staff)


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
    doc = B_PUBLIC_ID
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
        listing = client.get(f"/staff/documents/?patient={B_PUBLIC_ID}")
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
