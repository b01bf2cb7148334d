"""Where code goes (DESIGN §3), checked: app/ never imports views/, views never import each other,
one menu table, one vocabulary per audience, one row-scope module, one audit-name style, and the
client address reaches the audit trail as an argument (never read from the request by a service).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from tests.conftest import login, patient_username

ROOT = Path(__file__).resolve().parent.parent


def _python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imported_modules(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node))
    return found


def _is_views(module: str) -> bool:
    return module == "views" or module.startswith("views.")


@pytest.mark.no_db
def test_app_imports_no_views_module():
    """Only the composition root (create_app) may import views/, to register them."""
    offenders = []
    for path in _python_files("app"):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        create_app = {
            id(n)
            for f in tree.body
            if isinstance(f, ast.FunctionDef) and f.name == "create_app"
            for n in ast.walk(f)
        }
        for module, node in _imported_modules(tree):
            if _is_views(module) and not (rel == "app/__init__.py" and id(node) in create_app):
                offenders.append(f"{rel}:{node.lineno} imports {module}")
    assert offenders == []


@pytest.mark.no_db
def test_app_modules_import_without_views():
    """Every app/ module imports (the security manager included) with no views/ module loaded."""
    modules = [
        "app." + p.relative_to(ROOT / "app").with_suffix("").as_posix().replace("/", ".")
        for p in _python_files("app")
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'views' or m.startswith('views.'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.no_db
def test_views_import_no_other_view_module():
    """A view module imports from views/ only the shared helpers (views/common.py)."""
    offenders = []
    for path in _python_files("views"):
        if path.name == "__init__.py":  # the registry names the views as data
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, node in _imported_modules(tree):
            if _is_views(module) and module != "views.common":
                offenders.append(f"{path.name}:{node.lineno} imports {module}")
    assert offenders == []


@pytest.mark.no_db
def test_menu_is_one_table(app):
    """Every menu item comes from views.MENU, once, in its order; names are unique."""
    import views

    names = [e.name for e in views.MENU]
    assert len(names) == len(set(names))
    assert {e.category for e in views.MENU} - {""} <= set(views.CATEGORIES)
    assert all(bool(e.view) != bool(e.href) for e in views.MENU)
    shown, security = [], []
    for item in app.appbuilder.menu.get_list():
        children = [c.name for c in item.childs] if item.childs else [item.name]
        if item.name == "Security":  # FAB's own (its security manager), then ours: MENU's last
            security = [name for name in children if name in names]
            continue
        shown += children
    assert shown + security == names


def test_patient_menu_lists_consultations_once(app, make_patient):
    client = app.test_client()
    login(client, patient_username(app, make_patient()))
    navbar = client.get("/cabinet/").get_data(as_text=True).split("</header>", 1)[0]
    assert navbar.count('href="/cabinet/consultations/"') == 1


@pytest.mark.no_db
def test_status_vocabularies_name_their_audience_and_cover_every_status():
    from app import labels
    from models import ConsultationKind, ConsultationStatus

    for mapping in (labels.PATIENT_STATUS_LABELS, labels.STAFF_STATUS_LABELS):
        assert set(mapping) == set(ConsultationStatus)
    for mapping in (labels.PATIENT_KIND_LABELS, labels.STAFF_KIND_LABELS):
        assert set(mapping) == set(ConsultationKind)


@pytest.mark.no_db
def test_views_define_no_status_vocabulary_of_their_own():
    """Status words live in app/labels.py: no view or service outside it spells them."""
    pattern = re.compile(r'_l\("(Application sent|Needs documents|Documents needed)"\)')
    offenders = [
        p.relative_to(ROOT).as_posix()
        for folder in ("app", "views")
        for p in _python_files(folder)
        if p.name != "labels.py" and pattern.search(p.read_text(encoding="utf-8"))
    ]
    # app/reports.py keeps its copy until the reports split imports app.labels (merge).
    assert set(offenders) <= {"app/reports.py"}


def _audit_names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for folder in ("app", "views"):
        for path in _python_files(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if (
                    called not in {"audit", "_audit", "audit_values", "audit_consultation"}
                    or not node.args
                ):
                    continue
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.setdefault(first.value, []).append(path.name)
    return names


@pytest.mark.no_db
def test_audit_action_names_use_one_style():
    """ "<object>.<verb>", like consultation.cancel (the dominant style)."""
    names = _audit_names()
    assert len(names) > 20  # the scan sees the calls
    odd = {n for n in names if not re.fullmatch(r"[a-z_]+\.[a-z_]+", n)}
    assert odd == set()


# The cabinet and care paths of a consultation, and a conclusion's PDF, as notifications carry
# them: spelled only in app/consultations/common.py (the routes themselves live in views/).
_LINK_RE = re.compile(r"^/(cabinet/consultations|care/consultations|conclusions)/")


@pytest.mark.no_db
def test_consultation_audit_object_and_links_are_built_in_one_place():
    """Every event on a consultation goes through app.audit.audit_consultation, and every
    notification link to one through app/consultations/common.py."""
    audit_objects, links = [], []
    for folder in ("app", "media_server"):
        for path in _python_files(folder):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.keyword) and node.arg == "obj_type":
                    value = node.value
                    if isinstance(value, ast.Constant) and value.value == "consultation":
                        audit_objects.append(f"{rel}:{value.lineno}")
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if _LINK_RE.match(node.value):  # f-strings too: their first part
                        links.append(f"{rel}:{node.lineno}")
    assert [p for p in audit_objects if not p.startswith("app/audit.py:")] == []
    assert [p for p in links if not p.startswith("app/consultations/common.py:")] == []
    assert len(links) == 3  # the scan sees the three templates


def _user(*roles: str):
    return SimpleNamespace(
        id=1, is_authenticated=True, roles=[SimpleNamespace(name=r) for r in roles]
    )


@pytest.mark.no_db
@pytest.mark.parametrize(
    "roles, listed, cared",
    [
        (("Admin",), "true", "true"),
        (("Manager",), "true", "false"),  # the registry list, but no medical content
        (("Patient",), "false", "false"),
    ],
)
def test_consultation_scopes_are_two_named_rules(roles, listed, cared):
    from app.access import care_consultation_condition, consultation_list_condition

    assert str(consultation_list_condition(_user(*roles))) == listed
    assert str(care_consultation_condition(_user(*roles))) == cared


@pytest.mark.no_db
def test_doctor_scopes_agree_between_list_and_care():
    from app.access import care_consultation_condition, consultation_list_condition

    for roles in (("Doctor",), ("DutyDoctor",)):
        user = _user(*roles)
        assert str(consultation_list_condition(user)) == str(care_consultation_condition(user))


def test_audit_records_the_address_given_by_the_unit_of_work(app):
    from app.audit import audit
    from app.db import unit_of_work
    from app.extensions import db
    from models import AuditEvent

    with app.app_context():
        with unit_of_work(client_ip="203.0.113.7"):
            audit("structure.given")
            audit("structure.explicit", ip="198.51.100.1")
        with unit_of_work():  # a worker, the CLI: no address
            audit("structure.none")
        ips = dict(db.session.execute(select(AuditEvent.action, AuditEvent.ip)).all())
    assert ips == {
        "structure.given": "203.0.113.7",
        "structure.explicit": "198.51.100.1",
        "structure.none": "",
    }


@pytest.mark.no_db
def test_services_do_not_read_the_request():
    """DESIGN §3: no service module imports flask's request (the boundary modules may)."""
    boundary = {
        "__init__.py",
        "boundary.py",
        "csp.py",
        "error_pages.py",
        "hardening.py",
        "i18n.py",
        "security.py",
        "requests.py",  # app/ops/requests.py: every request's id, log line and timer
    }
    offenders = []
    for path in _python_files("app"):
        if path.name in boundary or path.parent.name == "templates":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "flask":
                names = {a.name for a in node.names}
                if names & {"request", "g", "flash", "session", "has_request_context"}:
                    offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
