"""«Отчёты»: the managers' reporting workspace, a Flask-Admin 2 interface under /reports/.

Flask-Admin is mounted beside Flask-AppBuilder in the same app (its own blueprints and URL
prefix, its Bootstrap 4 theme) and knows nothing of FAB's security, so every view here is gated
on FAB's roles itself (app.reports.access.REPORT_ROLES: Manager and Admin): `is_accessible` for the
exposed methods and a blueprint `before_request` for everything else the blueprint serves
(Flask-Admin's static files included). A visitor is sent to the sign-in page, anyone else
without the role gets 403. Read-only: GET routes only, no model views, nothing is created,
edited or deleted; Flask-Admin's tablib export (which holds the whole table in memory) is not
used — exports are the views' own streaming endpoints (app/reports/exports.py).

Thin views: parse the filters (a bad one is a translated message with 400, never a 500), one
service call, render; an export also writes its audit event.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from flask import (
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    request,
    stream_with_context,
)
from flask_admin import Admin, AdminIndexView, BaseView, expose
from flask_admin.menu import MenuLink
from flask_admin.theme import Bootstrap4Theme
from flask_appbuilder import AppBuilder
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app import csp
from app.extensions import db
from app.i18n import viewer_timezone
from app.labels import (
    CHANNEL_LABELS,
    OUTBOUND_STATUS_LABELS,
    STAFF_KIND_LABELS,
    STAFF_STATUS_LABELS,
)
from app.reports.access import may_see_personal_data, may_see_reports
from app.reports.charts import dashboard_charts
from app.reports.dashboard import dashboard
from app.reports.export_columns import build_export
from app.reports.exports import (
    export_filename,
    file_chunks,
    file_size,
    record_export,
    stream_csv,
    xlsx_tempfile,
)
from app.reports.filters import Filters, ReportError, filter_choices, parse_filters
from app.reports.labels import (
    CANCEL_BY_LABELS,
    LOAD_STATUSES,
    OUTCOME_LABELS,
    OUTCOMES,
    REPORT_TITLES,
    ROW_OUTCOME_LABELS,
)
from app.reports.queries import (
    cancellations_report,
    consultations_report,
    load_report,
    outbox_report,
    referral_rows_page,
    referrals_report,
)
from app.reports.service_level import delay_hours, sla_report
from models import AuditOutcome, ConsultationKind, OutboundChannel
from views.common import download, unit_of_work

URL = "/reports"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ReportAccess:
    """FAB roles gate every URL of the view's blueprint; nothing here writes."""

    can_create = False
    can_edit = False
    can_delete = False
    report = "dashboard"

    def is_accessible(self) -> bool:
        return may_see_reports(current_user)

    def inaccessible_callback(self, name: Any, **kwargs: Any):
        if not current_user.is_authenticated:
            login = current_app.appbuilder.get_url_for_login
            return redirect(f"{login}?{urlencode({'next': request.full_path.rstrip('?')})}")
        abort(403)

    def create_blueprint(self, admin: Admin):
        blueprint = super().create_blueprint(admin)  # type: ignore[misc]

        @blueprint.before_request
        def _gate():
            if not self.is_accessible():
                return self.inaccessible_callback(request.endpoint)
            return None

        return blueprint

    # --- shared by the reports ------------------------------------------------------------

    def filters(self, **extra: str) -> Filters:
        args = {k: v for k, v in request.args.items()}
        args.update(extra)
        return parse_filters(self.report, args, tz=viewer_timezone())

    def page(self, template: str, f: Filters | None, **context: Any):
        return self.render(  # type: ignore[attr-defined]
            template,
            f=f,
            report=self.report,
            report_title=REPORT_TITLES.get(self.report, _l("Reports")),
            choices=filter_choices(),
            args=request.args,
            kind_labels=STAFF_KIND_LABELS,
            status_labels=STAFF_STATUS_LABELS,
            channel_labels=CHANNEL_LABELS,
            outbound_status_labels=OUTBOUND_STATUS_LABELS,
            **context,
        )

    def refused(self, template: str, error: ReportError):
        return self.page(template, None, error=str(error)), 400

    # --- exports --------------------------------------------------------------------------

    def export_csv(self, f: Filters) -> Response:
        user = current_user._get_current_object()
        export = build_export(self.report, f, user=user)

        def done(rows: int, outcome: AuditOutcome) -> None:
            with unit_of_work():
                record_export(
                    user=user, report=self.report, fmt="csv", f=f, rows=rows, outcome=outcome
                )

        body = stream_csv(export, tz=f.tz, on_done=done)
        return download(
            stream_with_context(body),
            filename=export_filename(self.report, f, "csv"),
            mimetype="text/csv",
        )

    def export_xlsx(self, f: Filters) -> Response:
        user = current_user._get_current_object()
        export = build_export(self.report, f, user=user)
        try:
            handle, rows = xlsx_tempfile(export, tz=f.tz)
        except Exception:
            db.session.rollback()
            with unit_of_work():
                record_export(
                    user=user, report=self.report, fmt="xlsx", f=f, rows=0,
                    outcome=AuditOutcome.ERROR,
                )  # fmt: skip
            raise
        with unit_of_work():
            record_export(
                user=user, report=self.report, fmt="xlsx", f=f, rows=rows, outcome=AuditOutcome.OK
            )
        return download(
            file_chunks(handle),
            filename=export_filename(self.report, f, "xlsx"),
            mimetype=XLSX,
            length=file_size(handle),
        )


class ReportView(ReportAccess, BaseView):
    """One report: its page (filters, figures, a list) and its CSV / XLSX exports."""

    template = "reports/consultations.html"

    def context(self, f: Filters) -> dict[str, Any]:
        raise NotImplementedError

    @expose("/")
    def index(self):
        try:
            f = self.filters()
            return self.page(self.template, f, **self.context(f))
        except ReportError as exc:
            return self.refused(self.template, exc)

    @expose("/export.csv")
    def csv(self):
        try:
            return self.export_csv(self.filters())
        except ReportError as exc:
            return self.refused(self.template, exc)

    @expose("/export.xlsx")
    def xlsx(self):
        try:
            return self.export_xlsx(self.filters())
        except ReportError as exc:
            return self.refused(self.template, exc)


class DashboardView(ReportAccess, AdminIndexView):
    report = "dashboard"

    @expose("/")
    def index(self):
        try:
            f = self.filters()
        except ReportError as exc:
            return self.refused("reports/dashboard.html", exc)
        data = dashboard(f.tz, centre_id=f.centre_id)
        return self.page("reports/dashboard.html", f, data=data, charts=dashboard_charts(data))


class ConsultationsReportView(ReportView):
    report = "consultations"
    template = "reports/consultations.html"

    def context(self, f: Filters) -> dict[str, Any]:
        return {"data": consultations_report(f), "kinds": list(ConsultationKind)}


class ServiceLevelReportView(ReportView):
    report = "sla"
    template = "reports/sla.html"

    def context(self, f: Filters) -> dict[str, Any]:
        data = sla_report(f)
        return {
            "data": data,
            "outcomes": OUTCOMES,
            "outcome_labels": OUTCOME_LABELS,
            "delay_hours": delay_hours,
        }


class DoctorLoadReportView(ReportView):
    report = "load"
    template = "reports/load.html"

    def context(self, f: Filters) -> dict[str, Any]:
        return {"data": load_report(f), "statuses": LOAD_STATUSES}


class CancellationsReportView(ReportView):
    report = "cancellations"
    template = "reports/cancellations.html"

    def context(self, f: Filters) -> dict[str, Any]:
        return {"data": cancellations_report(f), "who_labels": CANCEL_BY_LABELS}


class ReferralsReportView(ReportView):
    report = "referrals"
    template = "reports/referrals.html"

    def context(self, f: Filters) -> dict[str, Any]:
        personal = may_see_personal_data(current_user)
        rows = referral_rows_page(f, personal=personal) if f.import_id else None
        return {
            "data": referrals_report(f),
            "rows": rows,
            "personal": personal,
            "row_outcomes": ROW_OUTCOME_LABELS,
        }

    @expose("/<uuid:public_id>/")
    def rows(self, public_id: uuid.UUID):
        try:
            args = {k: v for k, v in request.args.items() if k != "import"}
            f = parse_filters(self.report, {**args, "import": str(public_id)}, tz=viewer_timezone())
        except ReportError:
            abort(404)
        return self.page(self.template, f, **self.context(f))


class OutboxReportView(ReportView):
    report = "outbox"
    template = "reports/outbox.html"

    def context(self, f: Filters) -> dict[str, Any]:
        personal = may_see_personal_data(current_user)
        return {
            "data": outbox_report(f, personal=personal),
            "personal": personal,
            "channels": list(OutboundChannel),
        }


def init_reports(app: Flask) -> Admin:
    """One Flask-Admin per app (create_app runs per test session, bench, worker)."""
    admin = Admin(
        name=_l("Reports"),
        url=URL,
        endpoint="reports",
        index_view=DashboardView(name=_l("Dashboard"), endpoint="reports", url=URL),
        theme=Bootstrap4Theme(base_template="reports/base.html", fluid=True),
        csp_nonce_generator=csp.nonce,
    )
    # Endpoints start with "reports_": FAB's blueprints are named after view classes, so no
    # name can clash; URLs live under /reports/, which no FAB view uses.
    views = [
        ConsultationsReportView(_l("Consultations"), endpoint="reports_consultations"),
        ServiceLevelReportView(_l("Service level"), endpoint="reports_sla"),
        DoctorLoadReportView(_l("Doctor load"), endpoint="reports_load"),
        CancellationsReportView(_l("Cancellations"), endpoint="reports_cancellations"),
        ReferralsReportView(_l("Referral imports"), endpoint="reports_referrals"),
        OutboxReportView(_l("Outbound messages"), endpoint="reports_outbox"),
    ]
    for view in views:
        view.url = f"{URL}/{view.endpoint.removeprefix('reports_')}"
        admin.add_view(view)
    admin.add_link(MenuLink(name=_l("Back to the service"), url="/"))
    admin.init_app(app)
    return admin


def setup(appbuilder: AppBuilder) -> None:
    # The main menu's way in is the "Reports" link of views/__init__.py's MENU.
    init_reports(current_app._get_current_object())
