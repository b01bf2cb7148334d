"""Application factory: the one place that wires extensions, security, views and CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask_appbuilder import AppBuilder
from werkzeug.security import generate_password_hash
from werkzeug.utils import import_string

import config as config_module
from app import extensions

BASE_DIR = Path(__file__).resolve().parent.parent


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_path=config_module.INSTANCE_DIR.as_posix(),
        template_folder="templates",
        static_folder="static",
    )
    app.config.update(config_module.build_config())
    if overrides:
        app.config.update(overrides)

    from flask_babel import lazy_gettext

    from app.permissions import ROLE_MATRIX

    app.config["APP_NAME"] = lazy_gettext("Health Cloud")  # the navbar shows it per locale

    app.config["FAB_ROLES"] = ROLE_MATRIX
    # FAB calls this setting; config.py names it as a dotted path (importing app/ there would
    # be a cycle, and the media server reads config.py without app/).
    validator = app.config.get("FAB_PASSWORD_COMPLEXITY_VALIDATOR")
    if isinstance(validator, str):
        app.config["FAB_PASSWORD_COMPLEXITY_VALIDATOR"] = import_string(validator)
    # How passwords are hashed (FAB's defaults, named once: app.accounts.hash_password reads
    # them). A sign-in with an unknown login checks the fake hash so that it takes as long as a
    # wrong password: made with the same method, not FAB's fixed scrypt one.
    app.config.setdefault("FAB_PASSWORD_HASH_METHOD", "scrypt")
    app.config.setdefault("FAB_PASSWORD_HASH_SALT_LENGTH", 16)
    app.config.setdefault(
        "AUTH_DB_FAKE_PASSWORD_HASH_CHECK",
        generate_password_hash("password", method=app.config["FAB_PASSWORD_HASH_METHOD"]),
    )
    # Roles live in the matrix (no SQL per permission check); tables come from migrations.
    app.config["FAB_UPDATE_PERMS"] = False
    app.config["FAB_CREATE_DB"] = False
    Path(app.config["STORAGE_DIR"]).mkdir(parents=True, exist_ok=True)

    from app import ops

    ops.init_app(app)  # first: the request id and the timer start before any other hook (CSRF)

    db = extensions.db
    db.init_app(app)

    extensions.migrate.init_app(
        app, db, directory=str(BASE_DIR / "migrations"), render_as_batch=True
    )
    # CSRF before AppBuilder so that FAB's forms and ours are all protected.
    extensions.csrf.init_app(app)

    from app import boundary, error_pages, hardening, i18n, storage

    storage.init_app(app)  # what a killed upload left behind goes before anything is served
    boundary.init_app(app)

    # The composition root: the one place in app/ that imports views/. The security manager
    # gets its screens from this configuration, so app/security.py does not import views/.
    import views

    app.config.update(views.security_config())

    appbuilder = AppBuilder(update_perms=False)
    with app.app_context():
        appbuilder.init_app(app, db.session)
        i18n.init_app(app)
        hardening.init_app(app)
        error_pages.init_app(app)
        views.register_views(appbuilder)
        appbuilder.post_init()

    from app.cli import register_cli

    register_cli(app)
    from app import assets, pwa

    pwa.init_app(app)  # the manifest, the offline page and the service worker
    assets.init_app(app)  # last: it serves every blueprint's static files, hashed
    return app
