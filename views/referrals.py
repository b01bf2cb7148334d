"""«Импорт направлений»: the manager's screens for pathway 3 (app/referrals/ does the work).

Thin views (DESIGN §3): FAB permission check, the import by its public id (managers share all
imports), one service call in one unit of work, a message and a redirect — or a file / JSON.
The import itself runs on the task queue; the page polls its progress.
"""

from __future__ import annotations

import uuid

from flask import Response, abort, current_app, flash, g, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.errors import DomainError
from app.extensions import db
from app.referrals.importer import import_progress, start_import
from app.referrals.invitations import resend_credentials
from app.referrals.recovery import stalled_since
from app.referrals.template import build_template_xlsx
from app.referrals.tracking import (
    OUTCOME_LABELS,
    STAGE_LABELS,
    STAGES,
    export_tracking_xlsx,
    import_by_public_id,
    import_rows,
    recent_imports,
    tracked_rows,
)
from app.referrals.upload import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, read_upload
from app.referrals.validation import validate_upload
from models import ImportStatus, Patient
from views.common import download, sign_in_url, unit_of_work

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PAGE_SIZE = 100

IMPORT_STATUS_LABELS = {
    ImportStatus.VALIDATED: _l("Checked, waiting for confirmation"),
    ImportStatus.IMPORTING: _l("Importing"),
    ImportStatus.DONE: _l("Imported"),
    ImportStatus.FAILED: _l("Interrupted"),
}


def _xlsx(data: bytes, filename: str) -> Response:
    return download(data, filename=filename, mimetype=XLSX)


class ReferralImportView(BaseView):
    route_base = "/referrals"
    default_view = "list"

    def _import(self, public_id: uuid.UUID):
        return import_by_public_id(public_id) or abort(404)

    @expose("/")
    @has_access
    def list(self):
        return self.render_template(
            "oblako/referral_list.html",
            imports=recent_imports(),
            status_labels=IMPORT_STATUS_LABELS,
            max_rows=current_app.config.get("REFERRAL_MAX_ROWS", DEFAULT_MAX_ROWS),
            title=_("Referral import"),
        )

    @expose("/template.xlsx")
    @has_access
    def template(self):
        return _xlsx(build_template_xlsx(), "referrals-template.xlsx")

    @expose("/upload", methods=["POST"])
    @has_access
    def upload(self):
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            flash(_("Choose the file with the table."), "warning")
            return redirect(url_for(".list"))
        limit = current_app.config.get("REFERRAL_MAX_BYTES", DEFAULT_MAX_BYTES)
        data = read_upload(upload.stream, limit)
        try:
            with unit_of_work():
                imp = validate_upload(g.user, upload.filename, data)
        except DomainError as exc:
            flash(str(exc), "danger")
            return redirect(url_for(".list"))
        if imp.error_rows:
            flash(
                _(
                    "The table is checked: %(valid)d rows are ready, %(errors)d have errors.",
                    valid=imp.valid_rows,
                    errors=imp.error_rows,
                ),
                "warning",
            )
        else:
            flash(
                _("The table is checked: %(valid)d rows are ready.", valid=imp.valid_rows),
                "success",
            )
        return redirect(url_for(".show", public_id=imp.public_id))

    @expose("/<uuid:public_id>")
    @has_access
    def show(self, public_id: uuid.UUID):
        imp = self._import(public_id)
        errors_only = request.args.get("errors") == "1"
        page = max(request.args.get("page", 1, type=int) or 1, 1)
        rows, total = import_rows(imp, errors_only=errors_only, page=page, page_size=PAGE_SIZE)
        return self.render_template(
            "oblako/referral_show.html",
            imp=imp,
            rows=tracked_rows(rows),
            total=total,
            page=page,
            pages=max(1, -(-total // PAGE_SIZE)),
            errors_only=errors_only,
            progress=import_progress(imp),
            stalled_since=stalled_since(imp),
            status_labels=IMPORT_STATUS_LABELS,
            stage_labels=STAGE_LABELS,
            outcome_labels=OUTCOME_LABELS,
            stages=STAGES,
            title=_("Referral import"),
        )

    @expose("/<uuid:public_id>/progress")
    @has_access
    def progress(self, public_id: uuid.UUID):
        return jsonify(import_progress(self._import(public_id)))

    @expose("/<uuid:public_id>/confirm", methods=["POST"])
    @has_access
    def confirm(self, public_id: uuid.UUID):
        imp = self._import(public_id)
        try:
            with unit_of_work():
                start_import(imp, by=g.user)
        except DomainError as exc:
            flash(str(exc), "danger")
            return redirect(url_for(".show", public_id=public_id))
        from app.tasks import import_referrals

        import_referrals(imp.id, sign_in_url())
        flash(_("The import has started; the page shows its progress."), "success")
        return redirect(url_for(".show", public_id=public_id))

    @expose("/<uuid:public_id>/export.xlsx")
    @has_access
    def export(self, public_id: uuid.UUID):
        imp = self._import(public_id)
        name = f"referrals-{imp.created_at:%Y-%m-%d}-{str(imp.public_id)[:8]}.xlsx"
        return _xlsx(export_tracking_xlsx(imp), name)

    @expose("/resend/<uuid:patient_id>", methods=["POST"])
    @has_access
    def resend(self, patient_id: uuid.UUID):
        patient = db.session.execute(
            select(Patient).where(Patient.public_id == patient_id)
        ).scalar_one_or_none() or abort(404)
        try:
            with unit_of_work():
                resend_credentials(patient, by=g.user, sign_in_url=sign_in_url())
        except DomainError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("A new password has been sent by SMS; the old one no longer works."), "success")
        back = request.form.get("back", "")
        try:
            return redirect(url_for(".show", public_id=uuid.UUID(back)))
        except ValueError:
            return redirect(url_for(".list"))
