"""The landing page: a welcome for visitors, a redirect to the right home for users."""

from __future__ import annotations

from flask import g, redirect, url_for
from flask_appbuilder import IndexView, expose

from app.roles import is_patient


class HomeView(IndexView):
    index_template = "oblako/index.html"

    @expose("/")
    def index(self):
        user = g.user
        if user is not None and user.is_authenticated and is_patient(user):
            return redirect(url_for("CabinetView.index"))
        return self.render_template(self.index_template, appbuilder=self.appbuilder)
