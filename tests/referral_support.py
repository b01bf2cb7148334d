"""Shared by the referral import tests (test_referrals_*): the manager who imports, and the
steps of an import — validate a file, read its rows back, run the import, count records."""

from __future__ import annotations

from sqlalchemy import func, select


def make_manager(app) -> int:
    """A manager account (mgr) to upload and import as; its user id."""
    from app.accounts import create_manager
    from app.extensions import db

    with app.app_context():
        user = create_manager(
            username="mgr",
            password="Secret123abc",
            first_name="М",
            last_name="Менеджер",
            email="mgr@example.org",
        )
        db.session.commit()
        return user.id


def _validate(app, manager, data, filename="t.xlsx"):
    from app.extensions import db
    from app.referrals.validation import validate_upload
    from models import OblakoUser

    with app.app_context():
        imp = validate_upload(db.session.get(OblakoUser, manager), filename, data)
        db.session.commit()
        return imp.id


def _rows(app, import_id):
    from app.extensions import db
    from models import ReferralImportRow

    with app.app_context():
        rows = db.session.execute(
            select(ReferralImportRow)
            .where(ReferralImportRow.import_id == import_id)
            .order_by(ReferralImportRow.row_number)
        ).scalars()
        return [(r.row_number, r.outcome, r.errors, r.patient_id, dict(r.data)) for r in rows]


def _import(app, import_id, **kw):
    from app.referrals.importer import run_import

    with app.app_context():
        return run_import(import_id, sign_in_url="https://oblako.test/login/", **kw)


def _count(app, model, *where):
    from app.extensions import db

    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()
