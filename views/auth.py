"""Sign-in view: FAB's DB login, with the throttle applied before it (app/hardening.py)."""

from __future__ import annotations

from flask_appbuilder.security.views import AuthDBView


class OblakoAuthDBView(AuthDBView):
    """Same form and flow as FAB's; a named class so the throttle can recognise the endpoint."""
