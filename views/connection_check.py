"""«Проверка связи» (Security menu, administrators): the browser gathers ICE candidates through
the configured STUN/TURN servers and says whether relay candidates appear, i.e. whether patients
on mobile networks and behind firewalls will reach the other side through TURN."""

from __future__ import annotations

from flask import current_app, g
from flask_appbuilder import BaseView, expose, has_access
from flask_babel import gettext as _

from app import turn


def page_texts() -> dict[str, str]:
    return {
        "running": _("Checking: the browser asks the configured servers for candidates…"),
        "relay_ok": _(
            "The TURN server works: relay candidates appeared. Patients behind firewalls and on "
            "mobile networks will be able to connect."
        ),
        "no_relay": _(
            "No relay candidates appeared: the TURN server did not answer or refused the "
            "credential. Calls will fail for many patients on mobile networks. Check TURN_URLS, "
            "TURN_SECRET and that the TURN ports are open."
        ),
        "no_turn": _(
            "No TURN server is configured (TURN_SECRET and TURN_URLS): only direct connections "
            "are possible."
        ),
        "failed": _("The browser could not run the check: %(error)s"),
        "host": _("Local address"),
        "srflx": _("Public address (STUN)"),
        "prflx": _("Address seen by the other side"),
        "relay": _("Relay (TURN)"),
    }


class ConnectionCheckView(BaseView):
    route_base = "/admin/connection-check"
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        cfg = current_app.config
        config = {
            # A credential of its own for this check, short-lived like a join's.
            **turn.ice_config(cfg, f"check-{g.user.id}"),
            "turn": turn.turn_configured(cfg),
            "text": page_texts(),
        }
        response = current_app.make_response(
            self.render_template(
                "oblako/connection_check.html",
                config=config,
                servers=[
                    url
                    for entry in config["ice_servers"]
                    for url in (
                        entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
                    )
                ],
                title=_("Connection check"),
                appbuilder=self.appbuilder,
            )
        )
        response.headers["Cache-Control"] = "no-store"
        return response
