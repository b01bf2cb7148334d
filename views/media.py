"""The consultation room: the join token, the room page, the chat panel, invites for a guest.

Thin views (DESIGN §3): permission, scope through app.media (404 for what is not yours), one
service call, a message. The rules (who, when, with what grant) are in app/media.py.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from flask import (
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask_appbuilder import AppBuilder, BaseView, expose, has_access
from flask_appbuilder.const import PERMISSION_PREFIX
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf
from wtforms import SelectField, StringField
from wtforms.validators import InputRequired, Length

from app import media as svc
from app.dates import format_in_zone, zone_label
from app.errors import DomainError, NotFound
from app.i18n import local_datetime, viewer_timezone
from views.common import endpoint_url, unit_of_work

GUEST_SESSION_KEY = "media_guest_invite"


# ---------------------------------------------------------------------------------------------
# What the page's script reads: every text it shows, already translated (no English in JS)
# ---------------------------------------------------------------------------------------------


def page_texts() -> dict[str, str]:
    return {
        "waiting": _("Please wait: the doctor will invite you shortly."),
        "waiting_title": _("Waiting room"),
        "connecting": _("Connecting…"),
        "in_call": _("You are in the consultation."),
        "reconnecting": _("The connection was lost. Reconnecting…"),
        "chat_unavailable": _(
            "No connection to the consultation server: the chat is unavailable for now, the "
            "call goes on. Reconnecting…"
        ),
        # The other side's connection (the room's presence, from the media server).
        "lost_doctor": _("The doctor's connection has dropped. Please wait: it will resume."),
        "lost_patient": _("The patient's connection has dropped. Waiting for them to return…"),
        "lost_guest": _("%(name)s: the connection has dropped. Waiting for them to return…"),
        "back_doctor": _("The doctor is back online."),
        "back_patient": _("The patient is back online."),
        "back_guest": _("%(name)s is back online."),
        "permission_denied": _(
            "The browser is not allowed to use the camera and microphone. Allow access in the "
            "browser (the camera icon in the address bar or the site settings) and reload the "
            "page. You can still write in the chat."
        ),
        "no_device": _(
            "No camera or microphone was found on this device. Connect one and reload the page. "
            "You can still write in the chat."
        ),
        "device_busy": _(
            "The camera or microphone could not be started: another program may be using it. "
            "Close it and reload the page."
        ),
        "unsupported": _(
            "This browser cannot make video calls. Open the page in a current Chrome, Firefox, "
            "Safari or Yandex Browser. You can still write in the chat."
        ),
        "devices_ok": _("The camera and microphone work. Speak: the bar shows the sound level."),
        "checking": _("Allow the browser to use the camera and microphone."),
        "nobody_waiting": _("Nobody is waiting yet."),
        "admit": _("Admit"),
        "admit_and_start": _("Admit and start the consultation"),
        "is_waiting": _("is waiting"),
        "ended": _("The consultation has ended. Thank you!"),
        "left": _("You have left the call."),
        "mute": _("Mute"),
        "unmute": _("Unmute"),
        "camera_off": _("Camera off"),
        "camera_on": _("Camera on"),
        "sending": _("sending…"),
        "unsent": _("Not sent."),
        "resend": _("Send again"),
        "unsent_closed": _(
            "Not sent yet: it will be sent as soon as the doctor starts the consultation."
        ),
        "you": _("You"),
        "started": _("The consultation has started."),
        "start_failed": _("The consultation could not be started. Reload the page."),
        "end_confirm": _("End the consultation for everyone and go to the conclusion?"),
        "token_failed": _("Could not connect to the consultation. Reload the page."),
        "session_expired": _("Your session has expired: sign in again."),
        "invite_failed": _("The invitation could not be created."),
        "record_start": _("Start recording"),
        "record_stop": _("Stop recording"),
        "copied": _("The link has been copied."),
        "revoke": _("Revoke"),
    }


def error_texts() -> dict[str, str]:
    """The media server's codes (docs/media-contract.md) as the user reads them."""
    return {
        "token_missing": _("Could not connect to the consultation. Reload the page."),
        "token_expired": _("The connection has expired. Reconnecting…"),
        "token_invalid": _("Could not connect to the consultation. Reload the page."),
        "origin_forbidden": _("This address is not allowed to connect to the consultation."),
        "room_full": _("The consultation room is full."),
        # Logout, a password change or deactivation (elsewhere): the socket was closed.
        "session_ended": _("Your session has expired: sign in again."),
        "chat_closed": _(
            "The chat is closed: you can write to the doctor during the consultation "
            "(and before it, for a duty doctor's appointment)."
        ),
        "not_admitted": _("You can write in the chat once the doctor lets you into the call."),
        "too_long": _("The message is too long: at most 2000 characters."),
        "rate_limited": _("You are sending messages too fast. Wait a few seconds."),
        "room_closed": _("The consultation room is closed: it opens 15 minutes before the start."),
        "forbidden": _("Only the doctor can do this."),
        "not_found": _("The participant has left."),
        "bad_request": _("The request could not be understood."),
        "server_error": _("The message could not be saved yet. Retrying…"),
        "consent_missing": _(
            "Recording needs the consent of both the patient and the doctor: give it on the "
            "recording page (the link beside the chat)."
        ),
        "already_recording": _("The consultation is already being recorded."),
        "timeout": _("The consultation server did not answer in time. Try again."),
        "disconnected": _("No connection to the consultation server. Reconnecting…"),
        "unknown": _("Something went wrong. Reload the page."),
    }


def json_error(status: int, code: str, message: str):
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def has_access_json(f):
    """FAB's has_access for a JSON endpoint: a refused signed-in user gets a JSON 403 (the page's
    fetch reads it), a visitor is sent to sign in like every other protected route."""
    name = f.__name__

    @functools.wraps(f)
    def wraps(self, *args, **kwargs):
        permission = f"{PERMISSION_PREFIX}{name}"
        if permission in self.base_permissions and self.appbuilder.sm.has_access(
            permission, self.class_permission_name
        ):
            return f(self, *args, **kwargs)
        if current_user.is_authenticated and current_user.is_active:
            return json_error(403, "forbidden", _("You cannot join this consultation."))
        return redirect(url_for(self.appbuilder.sm.auth_view.__class__.__name__ + ".login"))

    wraps._permission_name = name
    return wraps


def media_base_url() -> str:
    return svc.media_url(current_app.config, scheme=request.scheme, host=request.host)


def history_lines(p: svc.Participation) -> list[svc.ChatLine]:
    return svc.chat_history(p.consultation, viewer_id=p.user_id, viewer_invite_id=p.invite_id)


def mark_history_read(p: svc.Participation, lines: list[svc.ChatLine]) -> None:
    """Rendering the history shows it: the cabinet's unread count goes to zero."""
    if p.user_id is None or not lines:
        return
    with unit_of_work():
        svc.mark_read(p.user_id, p.consultation, lines[-1].id)


def script_config(
    p: svc.Participation, *, mode: str, token_url: str, lines: list[svc.ChatLine], **extra: Any
) -> dict[str, Any]:
    return {
        "mode": mode,  # "room" (video + chat) or "chat" (the consultation page's panel)
        "role": p.role,
        "name": p.name,
        "consultation": str(p.consultation.public_id),
        "token_url": token_url,
        "media": p.media,
        "chat": p.chat,
        "last_seen": lines[-1].id if lines else 0,
        "timezone": (
            viewer_timezone() if p.user_id is not None else current_app.config["DEFAULT_TIMEZONE"]
        ),
        "locale": "ru",
        "csrf_token": generate_csrf(),
        "text": page_texts(),
        "errors": error_texts(),
        "role_labels": {k: str(v) for k, v in svc.ROLE_LABELS.items()},
        **extra,
    }


def opens_message(p: svc.Participation) -> str | None:
    """«The room opens at …» in the viewer's zone, while it is too early."""
    if not p.too_early or p.opens_at is None:
        return None
    if p.user_id is None:
        when = format_in_zone(p.opens_at, current_app.config["DEFAULT_TIMEZONE"])
        zone = zone_label(current_app.config["DEFAULT_TIMEZONE"])
    else:
        when, zone = local_datetime(p.opens_at, "d MMMM y, HH:mm"), zone_label(viewer_timezone())
    return _(
        "It is too early: the consultation room opens at %(when)s (%(zone)s), 15 minutes before "
        "the start.",
        when=when,
        zone=zone,
    )


class InviteForm(FlaskForm):
    name = StringField(
        _l("Participant's name"),
        validators=[
            InputRequired(message=_l("Enter the participant's name.")),
            Length(max=svc.GUEST_NAME_MAX),
        ],
        render_kw={"maxlength": str(svc.GUEST_NAME_MAX), "autocomplete": "off"},
    )
    role = SelectField(
        _l("Who is it"),
        choices=[(k, v) for k, v in svc.GUEST_ROLES.items()],
        validate_choice=False,
    )


def form_errors(form: FlaskForm) -> str:
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


# ---------------------------------------------------------------------------------------------
# Patients and doctors
# ---------------------------------------------------------------------------------------------


class MediaView(BaseView):
    route_base = "/media"
    default_view = "room"

    def _participation(self, public_id: uuid.UUID) -> svc.Participation:
        try:
            return svc.participation(g.user, public_id)
        except NotFound:
            abort(404)

    @expose("/token/<uuid:public_id>")
    @has_access_json
    def token(self, public_id: uuid.UUID):
        try:
            p = svc.participation(g.user, public_id)
        except NotFound as exc:
            return json_error(404, "not_found", str(exc))
        payload = svc.token_for(p, url=media_base_url())
        response = jsonify(payload)
        response.headers["Cache-Control"] = "no-store"
        return response

    @expose("/room/<uuid:public_id>")
    @has_access
    def room(self, public_id: uuid.UUID):
        p = self._participation(public_id)
        c = p.consultation
        lines = history_lines(p)
        mark_history_read(p, lines)
        is_doctor = p.is_doctor
        back_url = (
            url_for("CareView.show", public_id=c.public_id)
            if is_doctor
            else url_for("MyConsultationView.show", public_id=c.public_id)
        )
        start_url = endpoint_url("ConclusionView.start", public_id=c.public_id)
        conclusion_url = endpoint_url("ConclusionView.new", public_id=c.public_id)
        config = script_config(
            p,
            mode="room",
            token_url=url_for("MediaView.token", public_id=c.public_id),
            lines=lines,
            status=c.status,
            back_url=back_url,
            start_url=start_url if is_doctor else None,
            conclusion_url=conclusion_url if is_doctor else None,
            invite_url=(url_for("MediaView.invite", public_id=c.public_id) if is_doctor else None),
        )
        return self.render_template(
            "oblako/room.html",
            p=p,
            c=c,
            lines=lines,
            config=config,
            back_url=back_url,
            opens_message=opens_message(p),
            recordings_url=endpoint_url("RecordingView.list", public_id=c.public_id),
            invites=svc.open_invites(c) if is_doctor else [],
            invite_form=InviteForm() if is_doctor else None,
            guest_roles=svc.GUEST_ROLES,
            title=_("Consultation"),
        )

    @expose("/room/<uuid:public_id>/invite", methods=["POST"])
    @has_access
    def invite(self, public_id: uuid.UUID):
        p = self._participation(public_id)
        wants_json = request.accept_mimetypes.best == "application/json"
        form = InviteForm()
        if not form.validate_on_submit():
            message = form_errors(form) or _("Check the form.")
            if wants_json:
                return json_error(400, "bad_request", message)
            flash(message, "danger")
            return redirect(url_for(".room", public_id=public_id))
        try:
            with unit_of_work():
                invite, secret = svc.create_invite(
                    p, name=form.name.data or "", guest_role=form.role.data or ""
                )
        except DomainError as exc:
            if wants_json:
                return json_error(400, "refused", str(exc))
            flash(str(exc), "danger")
            return redirect(url_for(".room", public_id=public_id))
        link = request.host_url.rstrip("/") + url_for("MediaGuestView.join", secret=secret)
        if wants_json:
            response = jsonify(
                link=link,
                name=invite.guest_name,
                role=str(svc.GUEST_ROLES[invite.guest_role]),
                invite=str(invite.public_id),
                expires_at=local_datetime(invite.expires_at, "d MMMM, HH:mm"),
                # The page lists it at once, with its «Revoke» (no reload: it would drop the call).
                revoke_url=url_for(
                    ".revoke_invite", public_id=public_id, invite_id=invite.public_id
                ),
                state=_("link not opened yet"),
            )
            response.headers["Cache-Control"] = "no-store"
            return response
        flash(
            _(
                "Send this one-time link to %(name)s: %(link)s",
                name=invite.guest_name,
                link=link,
            ),
            "success",
        )
        return redirect(url_for(".room", public_id=public_id))

    @expose("/room/<uuid:public_id>/invites/<uuid:invite_id>/revoke", methods=["POST"])
    @has_access
    def revoke_invite(self, public_id: uuid.UUID, invite_id: uuid.UUID):
        p = self._participation(public_id)
        wants_json = request.accept_mimetypes.best == "application/json"
        form = FlaskForm()
        if not form.validate_on_submit():
            message, ok = _("The form has expired. Please try again."), False
        else:
            try:
                with unit_of_work():
                    invite = svc.revoke_invite(p, invite_id)
            except DomainError as exc:
                message, ok = str(exc), False
            else:
                message = _("The invitation of %(name)s has been revoked.", name=invite.guest_name)
                ok = True
        if wants_json:  # the room page revokes in place: a reload would drop the call
            if not ok:
                return json_error(400, "refused", message)
            response = jsonify(ok=True, message=message)
            response.headers["Cache-Control"] = "no-store"
            return response
        flash(message, "success" if ok else "danger")
        return redirect(url_for(".room", public_id=public_id))


# ---------------------------------------------------------------------------------------------
# A guest without an account: the one-time link, the guest's room, the guest's token
# ---------------------------------------------------------------------------------------------


class MediaGuestView(BaseView):
    """Open to visitors on purpose: the invite's secret (then the session it was traded for)
    is the only key, and app.media checks the invite on every request."""

    route_base = "/media/guest"
    default_view = "room"

    def _guest(self) -> svc.Participation:
        try:
            return svc.guest_participation(session.get(GUEST_SESSION_KEY))
        except svc.InviteUnavailable as exc:
            session.pop(GUEST_SESSION_KEY, None)
            raise exc

    @expose("/join/<string:secret>")
    def join(self, secret: str):
        try:
            with unit_of_work():
                invite = svc.consume_invite(secret)
        except svc.InviteUnavailable as exc:
            return self._unavailable(str(exc))
        session[GUEST_SESSION_KEY] = invite.id
        return redirect(url_for(".room"))

    def _unavailable(self, message: str):
        return (
            self.render_template(
                "oblako/room_guest_closed.html", message=message, title=_("Consultation")
            ),
            404,
        )

    @expose("/room")
    def room(self):
        try:
            p = self._guest()
        except svc.InviteUnavailable as exc:
            return self._unavailable(str(exc))
        lines = history_lines(p)
        config = script_config(
            p,
            mode="room",
            token_url=url_for("MediaGuestView.token"),
            lines=lines,
            status=p.consultation.status,
            back_url=None,
            start_url=None,
            conclusion_url=None,
            invite_url=None,
        )
        return self.render_template(
            "oblako/room.html",
            p=p,
            c=p.consultation,
            lines=lines,
            config=config,
            back_url=None,
            opens_message=opens_message(p),
            recordings_url=None,
            invites=[],
            invite_form=None,
            guest_roles=svc.GUEST_ROLES,
            title=_("Consultation"),
        )

    @expose("/token")
    def token(self):
        try:
            p = self._guest()
        except svc.InviteUnavailable as exc:
            return json_error(403, "invite_unavailable", str(exc))
        payload = svc.token_for(p, url=media_base_url())
        response = jsonify(payload)
        response.headers["Cache-Control"] = "no-store"
        return response


# ---------------------------------------------------------------------------------------------
# For other areas' templates: the room button and chat panel of a consultation page, and the
# unread counts of a list (one query for the whole list)
# ---------------------------------------------------------------------------------------------


def media_panel(c) -> dict[str, Any] | None:
    """What the consultation page shows of the room: the «Войти в консультацию» button (from
    15 minutes before the start), the too-early message, and the chat panel."""
    user = getattr(g, "user", None)
    try:
        p = svc.participation(user, c.public_id)
    except NotFound:
        return None
    lines = history_lines(p)
    show_chat = p.chat or bool(lines)
    if show_chat:
        mark_history_read(p, lines)
    return {
        "p": p,
        "room_url": url_for("MediaView.room", public_id=c.public_id) if p.media else None,
        "opens_message": opens_message(p),
        "show_chat": show_chat,
        "lines": lines,
        "config": script_config(
            p,
            mode="chat",
            token_url=url_for("MediaView.token", public_id=c.public_id),
            lines=lines,
            status=c.status,
        )
        if show_chat
        else None,
    }


def chat_unread(consultations) -> dict[int, int]:
    user = getattr(g, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return svc.unread_counts(user.id, [c.id for c in consultations])


def setup(appbuilder: AppBuilder) -> None:
    current_app.jinja_env.globals["media_panel"] = media_panel
    current_app.jinja_env.globals["chat_unread"] = chat_unread
