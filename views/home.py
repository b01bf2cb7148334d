"""The landing page: a welcome for visitors, a redirect to the right home for users."""

from __future__ import annotations

from flask import g, redirect
from flask_appbuilder import IndexView, expose

from app.landing import landing_url


class HomeView(IndexView):
    index_template = "oblako/index.html"

    @expose("/")
    def index(self):
        target = landing_url(g.user)  # app.landing: the page of the user's role
        if target != self.appbuilder.get_url_for_index:
            return redirect(target)
        return self.render_template(self.index_template, appbuilder=self.appbuilder)
