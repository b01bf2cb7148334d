"""The managers' reports' world: a known set of consultations (`stage_world`, the `world` of
the tests/test_reports_*.py modules), the period that holds it, a signed-in client and the
reports' URLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from tests.conftest import login

MANAGER_TZ = "Asia/Vladivostok"  # UTC+10, no DST: a date moves to the next day in the evening


@dataclass
class World:
    now: datetime
    base: datetime
    c1: int
    c2: int
    d1: int
    d2: int
    manager: str
    admin: str
    doctor: str
    duty: str
    patient: str
    patient_user_id: int
    numbers: dict[str, str]


def _at(base: datetime, days: float) -> datetime:
    return base + timedelta(days=days)


def stage_world(app, make_center, make_doctor, make_staff, make_patient) -> World:
    """A known set of consultations.

    Service level (submitted `base` = 10 days ago unless said otherwise):
      centre_request: a in time (scheduled +2 d), b late (+4 d), c overdue (still requested),
        d waiting (submitted yesterday), e declined in time (+1 d), f withdrawn (cancelled by
        the patient +1 d), g cancelled by staff after the due time (+3.5 d) → overdue
      referral (4 days): h in time (+3.5 d), i late (+5 d)
      duty: j (not part of the service level), k missed
    → centre 2 in time of 5 counted (40 %), referral 1 of 2 (50 %), all 3 of 7 (42.9 %).
    """
    from app.extensions import db
    from models import Consultation, Doctor, OblakoUser, Patient

    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(days=10)
    c1, c2 = make_center("Центр Север"), make_center("Центр Юг")
    d1, d2 = make_doctor(center_id=c1), make_doctor(center_id=c2)
    duty = make_doctor(is_duty=True)
    manager, admin = make_staff("Manager"), make_staff("Admin")
    p1 = make_patient(surname="Отчётова")
    p2 = make_patient(surname="Вторая")
    three, four = timedelta(days=3), timedelta(days=4)
    with app.app_context():
        patient = db.session.get(Patient, p1)
        staff_user = db.session.get(Doctor, d1).user
        db.session.execute(
            update(OblakoUser).where(OblakoUser.username == manager).values(timezone=MANAGER_TZ)
        )

        def make(key: str, **kw) -> Consultation:
            submitted = kw.pop("submitted_at", base)
            kind = kw.pop("kind", "centre_request")
            due = None
            if kind in ("centre_request", "referral") and submitted is not None:
                due = submitted + (three if kind == "centre_request" else four)
            c = Consultation(
                kind=kind,
                patient_id=kw.pop("patient_id", p1),
                center_id=kw.pop("center_id", c1),
                created_at=kw.pop("created_at", submitted or base),
                submitted_at=submitted,
                due_by=due,
                **kw,
            )
            db.session.add(c)
            return c

        made = {
            "a": make("a", status="scheduled", doctor_id=d1, scheduled_set_at=_at(base, 2),
                      scheduled_at=_at(base, 5)),
            "b": make("b", status="completed", doctor_id=d1, scheduled_set_at=_at(base, 4),
                      scheduled_at=_at(base, 6), completed_at=_at(base, 6.1)),
            "c": make("c", status="requested"),
            "d": make("d", status="requested", submitted_at=now - timedelta(days=1)),
            "e": make("e", status="rejected", rejected_at=_at(base, 1), reviewed_at=_at(base, 1)),
            "f": make("f", status="cancelled", cancelled_at=_at(base, 1),
                      cancelled_by_id=patient.user_id, cancel_reason="=HYPERLINK(\"http://x\")"),
            "g": make("g", status="cancelled", cancelled_at=_at(base, 3.5),
                      cancelled_by_id=staff_user.id, cancel_reason="+79001234567 звонил\x07"),
            "h": make("h", kind="referral", status="scheduled", doctor_id=d2, center_id=c2,
                      scheduled_set_at=_at(base, 3.5), scheduled_at=_at(base, 6)),
            "i": make("i", kind="referral", status="scheduled", doctor_id=d2, center_id=c2,
                      scheduled_set_at=_at(base, 5), scheduled_at=_at(base, 7), patient_id=p2),
            "j": make("j", kind="duty", status="completed", doctor_id=duty, center_id=None,
                      scheduled_set_at=_at(base, 0), scheduled_at=_at(base, 0.5),
                      completed_at=_at(base, 0.6)),
            "k": make("k", kind="duty", status="missed", doctor_id=duty, center_id=None,
                      scheduled_set_at=_at(base, 0), scheduled_at=_at(base, 1),
                      missed_at=_at(base, 1.1)),
        }  # fmt: skip
        db.session.commit()
        numbers = {k: c.label for k, c in made.items()}
        doctor_username = db.session.get(Doctor, d1).user.username
        duty_username = db.session.get(Doctor, duty).user.username
        patient_login = patient.phone
        patient_user_id = patient.user_id
    return World(
        now, base, c1, c2, d1, d2, manager, admin, doctor_username, duty_username,
        patient_login, patient_user_id, numbers,
    )  # fmt: skip


def period(w: World) -> str:
    start = (w.base - timedelta(days=2)).date().isoformat()
    end = (w.now + timedelta(days=2)).date().isoformat()
    return f"date_from={start}&date_to={end}"


def signed_in(app, username: str):
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def report_urls(app) -> list[str]:
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0].startswith("reports"):
            url = rule.rule.replace("<uuid:public_id>", "00000000-0000-4000-8000-000000000000")
            url = url.replace("<path:filename>", "admin/css/bootstrap4/admin.css")
            urls.append(url)
    return sorted(urls)
