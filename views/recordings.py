"""Recordings of a consultation: the consent form, the list, playback and download.

Thin views (DESIGN §3): FAB permission check, row scope through app.recordings (only the
consultation's patient and its doctor; everybody else gets 404), one service call in one unit
of work, a message. Files are served only from here, through views.common.download (nosniff,
no-store), and every look is audited by the service (as documents are).
"""

from __future__ import annotations

import uuid

from flask import Response, abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_babel import gettext as _
from flask_wtf import FlaskForm

from app import recordings as svc
from app.security import client_ip
from models import Recording
from views.common import download, unit_of_work

# The media file is a document of its own: nothing in it may run or navigate; our own pages
# alone may embed it (the <video> element of the recordings page).
MEDIA_CSP = "sandbox; default-src 'none'; media-src 'self'; frame-ancestors 'self'"


class ConsentForm(FlaskForm):
    """No fields: the CSRF token is the form (the button says what is agreed to)."""


def _human_duration(seconds: float | None) -> str:
    if not seconds:
        return "—"
    total = round(seconds)
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def _starts_at_zero() -> bool:
    """A player's first request (no Range, or from byte 0): one audit row per playback rather
    than one per seek; every request is still scope-checked."""
    header = request.headers.get("Range", "")
    return not header or header.replace(" ", "").startswith("bytes=0-")


class RecordingView(BaseView):
    route_base = "/consultations/recordings"
    default_view = "list"

    def _consultation(self, public_id: uuid.UUID):
        return svc.consultation_for(g.user, public_id) or abort(404)

    @expose("/<uuid:public_id>/")
    @has_access
    def list(self, public_id: uuid.UUID):
        consultation, role = self._consultation(public_id)
        state = svc.consent_state(consultation)
        return self.render_template(
            "oblako/recordings.html",
            title=_("Recordings of the consultation"),
            consultation=consultation,
            role=role,
            state=state,
            mine=state.of(role),
            open_for_consent=not consultation.is_closed,
            recordings=svc.recordings_of(consultation),
            form=ConsentForm(),
            human_duration=_human_duration,
        )

    @expose("/<uuid:public_id>/consent", methods=["POST"])
    @has_access
    def consent(self, public_id: uuid.UUID):
        consultation, _role = self._consultation(public_id)
        form = ConsentForm()
        if not form.validate_on_submit():
            abort(400)
        try:
            with unit_of_work():
                svc.give_consent(consultation, by=g.user, ip=client_ip())
        except svc.RecordingError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("Your consent to the recording has been recorded."), "success")
        return redirect(url_for(".list", public_id=public_id))

    @expose("/<uuid:public_id>/withdraw", methods=["POST"])
    @has_access
    @permission_name("consent")
    def withdraw(self, public_id: uuid.UUID):
        consultation, _role = self._consultation(public_id)
        form = ConsentForm()
        if not form.validate_on_submit():
            abort(400)
        try:
            with unit_of_work():
                svc.withdraw_consent(consultation, by=g.user)
        except svc.RecordingError as exc:
            flash(str(exc), "danger")
        else:
            flash(_("Your consent to the recording has been withdrawn."), "success")
        return redirect(url_for(".list", public_id=public_id))

    def _find(self, public_id: uuid.UUID, action: str, *, audit_ok: bool = True):
        # The audit event (allowed or denied) is committed before we answer, even with a 404.
        with unit_of_work():
            found = svc.find_recording(g.user, public_id, action=action, audit_ok=audit_ok)
        if found is None:
            abort(404)
        return found

    @expose("/play/<uuid:public_id>")
    @has_access
    def play(self, public_id: uuid.UUID):
        recording, consultation = self._find(
            public_id, "recording.play", audit_ok=_starts_at_zero()
        )
        return _serve(recording, consultation, inline=True)

    @expose("/download/<uuid:public_id>")
    @has_access
    def download(self, public_id: uuid.UUID):
        recording, consultation = self._find(public_id, "recording.download")
        return _serve(recording, consultation, inline=False)


def _serve(recording: Recording, consultation, *, inline: bool) -> Response:
    try:
        path = svc.recording_path(recording)
    except ValueError:
        abort(404)
    if not path.is_file():
        abort(404)
    return download(
        path,
        filename=svc.download_name(recording, consultation),
        mimetype=recording.content_type,
        inline_csp=MEDIA_CSP if inline else None,
    )
