"""Helpers of the staff-screen tests (tests/test_staff_*.py): a signed-in client, a form post with
its CSRF token, a page's text, a doctor's username, a consultation row, a count of rows.
Those modules import them under their underscored names (`signed_in as _signed_in`, ...)."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.conftest import TEST_PASSWORD, csrf_token, login


def signed_in(app, username: str, password: str = TEST_PASSWORD) -> FlaskClient:
    client = app.test_client()
    response = login(client, username, password)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    return client


def post_form(client: FlaskClient, form_path: str, data: dict, **kw):
    data = {**data, "csrf_token": csrf_token(client, form_path)}
    return client.post(form_path, data=data, **kw)


def text(response) -> str:
    return response.get_data(as_text=True)


def doctor_username(app, doctor_id: int) -> str:
    from app.extensions import db
    from models import Doctor

    with app.app_context():
        return db.session.get(Doctor, doctor_id).user.username


def make_consultation(
    app,
    *,
    patient_id,
    center_id=None,
    doctor_id=None,
    slot_id=None,
    status="requested",
    kind="centre_request",
) -> int:
    from app.extensions import db
    from models import Consultation

    with app.app_context():
        c = Consultation(
            kind=kind,
            status=status,
            patient_id=patient_id,
            center_id=center_id,
            doctor_id=doctor_id,
            slot_id=slot_id,
        )
        db.session.add(c)
        db.session.commit()
        return c.id


def count(app, model, *where) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()
