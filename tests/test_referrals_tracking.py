"""Referral import (pathway 3), after the import: credentials sent again, the tracking export
(dangerous text kept as text, impossible characters dropped) and each row's stage."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from tests.referral_support import _count, _import, _validate, make_manager
from tests.referral_tables import csv_bytes, invitation, row, xlsx


@pytest.fixture
def manager(app):
    return make_manager(app)


def test_resend_credentials(app, catalogue, manager):
    from werkzeug.security import check_password_hash

    from app.extensions import db
    from app.referrals.invitations import resend_credentials
    from models import OblakoUser, OutboundMessage, Patient

    _import(app, _validate(app, manager, xlsx([row()])))
    with app.app_context():
        patient = db.session.execute(select(Patient)).scalar_one()
        first = db.session.execute(select(OutboundMessage)).scalar_one().body
        old = invitation(first)["password"]
        resend_credentials(patient, by=db.session.get(OblakoUser, manager))
        db.session.commit()
        resend_credentials(patient, by=db.session.get(OblakoUser, manager))
        db.session.commit()
        messages = list(
            db.session.execute(select(OutboundMessage).order_by(OutboundMessage.id)).scalars()
        )
        assert len(messages) == 3
        assert len({m.dedupe_key for m in messages}) == 3
        new = invitation(messages[-1].body)["password"]
        assert new != old
        user = patient.user
        assert check_password_hash(user.password, new)
        assert not check_password_hash(user.password, old)
        assert user.must_change_password


def test_resend_refused_for_self_registered(app, manager, make_patient):
    from app.extensions import db
    from app.referrals.common import ReferralError
    from app.referrals.invitations import resend_credentials
    from models import OblakoUser, OutboundMessage, Patient

    pid = make_patient()
    with app.app_context():
        with pytest.raises(ReferralError):
            resend_credentials(db.session.get(Patient, pid), by=db.session.get(OblakoUser, manager))
        db.session.rollback()
    assert _count(app, OutboundMessage) == 0


def test_export_writes_dangerous_text_as_text(app, catalogue, manager):
    from openpyxl import load_workbook

    from app.extensions import db
    from app.referrals.tracking import export_tracking_xlsx
    from models import ReferralImport

    data = csv_bytes(
        [row(name="=cmd|' /C calc'!A0 Анна", phone="+79123450001"), row(phone="x")],
        encoding="utf-8",
    )
    import_id = _validate(app, manager, data, "t.csv")
    _import(app, import_id)
    with app.app_context():
        body = export_tracking_xlsx(db.session.get(ReferralImport, import_id))
    ws = load_workbook(io.BytesIO(body)).worksheets[0]
    cells = {c.value: c for r in ws.iter_rows() for c in r if isinstance(c.value, str)}
    dangerous = cells["=cmd|' /C calc'!A0 Анна"]
    assert dangerous.data_type == "s"
    assert "+79123450001" in cells and cells["+79123450001"].data_type == "s"
    assert [c.value for c in ws[1]][:2] == ["Строка", "ФИО"]
    assert ws.max_row == 3


def test_export_drops_characters_a_spreadsheet_cannot_hold(app, catalogue, manager):
    """A control character past the part of a CSV the upload inspects (its first 64 KB) is kept
    in the row's raw text; the tracking export drops it instead of failing (app/spreadsheet)."""
    from openpyxl import load_workbook

    from app.extensions import db
    from app.referrals.tracking import export_tracking_xlsx
    from models import ReferralImport

    rows = [row(phone=f"+7912347{n:04d}", name=f"Пациентова{n} Анна") for n in range(1000)]
    rows[-1][9] = "ЦРБ\x01 №2"
    data = csv_bytes(rows, encoding="utf-8")
    assert data.decode().index("\x01") > 65536  # characters: what the upload reads
    import_id = _validate(app, manager, data, "t.csv")
    with app.app_context():
        body = export_tracking_xlsx(db.session.get(ReferralImport, import_id))
    ws = load_workbook(io.BytesIO(body)).worksheets[0]
    assert ws.max_row == 1001
    assert ws.cell(row=1001, column=7).value == "ЦРБ №2"


def test_tracking_stage_of_a_consultation_that_ended(app, catalogue, manager):
    """Concluded when completed; closed when it ended any other way (models.CLOSED_STATUSES)."""
    from app.extensions import db
    from app.referrals.tracking import tracked_rows
    from models import Consultation, ConsultationStatus, ReferralImportRow

    import_id = _validate(app, manager, xlsx([row()]))
    _import(app, import_id)
    stages = {}
    with app.app_context():
        consultation = db.session.execute(select(Consultation)).scalar_one()
        for status in ConsultationStatus:
            consultation.status = status
            db.session.flush()
            rows = list(
                db.session.execute(
                    select(ReferralImportRow).where(ReferralImportRow.import_id == import_id)
                ).scalars()
            )
            stages[status.value] = tracked_rows(rows)[0].stage
        db.session.rollback()
    assert stages["completed"] == "concluded"
    assert stages["cancelled"] == stages["rejected"] == stages["missed"] == "closed"
    assert stages["awaiting_documents"] == "invited"
    assert stages["scheduled"] == stages["in_progress"] == "scheduled"
