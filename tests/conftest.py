"""Test fixtures: one app per session on a freshly migrated database, clean tables per test.

DATABASE_URL selects the server: unset → a SQLite file in a temp folder; a PostgreSQL URL → a
fresh database beside it (`<name>_tests`), created, migrated and dropped by this session.
Redis is real too (REDIS_URL, default 127.0.0.1:6379 db 15): the sign-in throttle uses it.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url

os.environ.setdefault("OBLAKO_ENV", "test")

pytest_plugins = ["tests.media_fixtures", "tests.web_process", "tests.consultation_world"]

TEST_PASSWORD = "Secret123abc"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--topology",
        action="store_true",
        help="run the topology test (tests marked topology), and only it: `make topology`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The topology test runs once, by `make topology` (`.ci/run` calls it after the two suite
    passes); `make test` deselects it, and `--topology` selects nothing else."""
    wanted = config.getoption("--topology")
    keep, drop = [], []
    for item in items:
        (keep if (item.get_closest_marker("topology") is not None) == wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _postgres_test_url(base: str) -> str:
    url = make_url(base.replace("postgres://", "postgresql://", 1))
    url = url.set(drivername="postgresql+psycopg")
    name = f"{url.database}_tests_{os.getpid()}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        # A test database need not survive a crash of the server: without waiting for the WAL
        # flush at each commit the suite's thousands of small commits stop queueing on the disk
        # (every connection to this database gets it, the app's processes included).
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_postgres(url_str: str) -> None:
    url = make_url(url_str)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql")):
        url = _postgres_test_url(base)
        yield url
        _drop_postgres(url)
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture
def scratch_database_url(tmp_path) -> Iterator[str]:
    """A second, empty database on the same server as the suite's (for migration tests)."""
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith(("postgres://", "postgresql")):
        url = _postgres_test_url(base.rsplit("/", 1)[0] + "/scratch")
        yield url
        _drop_postgres(url)
    else:
        yield f"sqlite:///{tmp_path / 'scratch.db'}"


def _worker_redis_url(url: str, worker: str) -> str:
    """Under pytest-xdist worker gwN uses Redis database (base - N) mod 16: the media server's
    room keys are not namespaced, and two workers' consultation #1 must not meet there."""
    if not worker.startswith("gw"):
        return url
    n = int(worker[2:])
    if n >= 16:
        raise pytest.UsageError("at most 16 xdist workers: one Redis database each")
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(base - n) % 16}"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _worker_redis_url(
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        os.environ.get("PYTEST_XDIST_WORKER", ""),
    )
    import redis

    redis.Redis.from_url(url).ping()  # a real Redis is required, never skipped
    return url


@pytest.fixture(scope="session")
def app(database_url, redis_url, tmp_path_factory) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from app import create_app

    storage = tmp_path_factory.mktemp("storage")
    application = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret-key-of-32-bytes-or-more",  # PyJWT warns under 32 for HS256
            "SQLALCHEMY_DATABASE_URI": database_url,
            "STORAGE_DIR": str(storage),
            "RATELIMIT_STORAGE_URI": redis_url,
            "REDIS_URL": redis_url,
            # A fast hash keeps the suite quick; production uses scrypt (FAB's default).
            "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            "SERVER_NAME": "localhost",
        }
    )
    from app.throttle import init_app as init_throttle

    init_throttle(application)  # re-bind to the test Redis
    with application.app_context():
        upgrade()  # the real migrations, not create_all: they are what production runs
    yield application


def _table_names(app: Flask) -> list[str]:
    from models import Model

    return [t.name for t in reversed(Model.metadata.sorted_tables)]


def _empty_tables(conn, tables: list[str]) -> None:
    """Delete the rows of the tables that have any, dependents first; on PostgreSQL also
    restart their id sequences, as TRUNCATE ... RESTART IDENTITY did.

    Why not TRUNCATE every table: on PostgreSQL it replaces each table's files and costs about a
    second per test on this 2-core machine (measured: 1.2-1.7 s against 0.13-0.17 s for this,
    role rows included), while a test writes to a handful of small tables. One query finds them.
    """
    probe = " UNION ALL ".join(
        f'SELECT {i} WHERE EXISTS (SELECT 1 FROM "{t}")' for i, t in enumerate(tables)
    )
    written = {tables[i] for (i,) in conn.execute(text(probe))}
    for t in tables:  # dependents first: no foreign key is left pointing at a deleted row
        if t in written:
            conn.execute(text(f'DELETE FROM "{t}"'))
    if written and conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "SELECT setval(seq, 1, false) FROM ("
                " SELECT pg_get_serial_sequence(quote_ident(table_name), column_name) AS seq"
                " FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ANY(:names)"
                ") AS owned WHERE seq IS NOT NULL"
            ),
            {"names": sorted(written)},
        )


@pytest.fixture(autouse=True)
def clean_db(request, app: Flask) -> Iterator[None]:
    """Every test starts from empty tables with the roles in place.

    A test marked no_db runs on SQLite only (the PostgreSQL pass deselects it: `.ci/run`), so
    it must not touch a database at all: any SQL statement it runs in this process fails it.
    """
    if "no_db" in request.keywords:
        statements: list[str] = []
        # Threads left from earlier tests (a server or a client still closing) are not this
        # test's doing; its own thread and any thread it starts are.
        earlier = {t for t in threading.enumerate() if t is not threading.current_thread()}

        def _record(conn, cursor, statement, *args) -> None:
            if threading.current_thread() not in earlier:
                statements.append(statement)

        event.listen(Engine, "before_cursor_execute", _record)
        try:
            yield
        finally:
            event.remove(Engine, "before_cursor_execute", _record)
        assert not statements, (
            f"a no_db test ran {len(statements)} SQL statement(s), first: {statements[0]!r};"
            " drop the no_db mark so that it also runs on PostgreSQL"
        )
        return
    from app.demo import ensure_roles
    from app.extensions import db
    from app.throttle import get_throttle

    with app.app_context():
        with db.engine.begin() as conn:
            _empty_tables(conn, _table_names(app))
        ensure_roles()
        db.session.commit()
        get_throttle().reset()
    yield
    with app.app_context():
        db.session.remove()


@pytest.fixture
def ctx(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
        from app.extensions import db

        db.session.rollback()


_seq = itertools.count(1)


def unique_phone() -> str:
    return f"+7912{next(_seq) + 1000000:07d}"


@pytest.fixture
def make_patient(app: Flask):
    from app.accounts import create_patient, record_consent
    from app.extensions import db
    from models import ConsentKind

    def factory(**kw):
        n = next(_seq)
        data = dict(
            surname=kw.pop("surname", f"Тестова{n}"),
            name=kw.pop("name", "Анна"),
            patronymic="Ивановна",
            birth_date=date(1980, 1, 2),
            sex="female",
            phone=kw.pop("phone", unique_phone()),
            email=kw.pop("email", f"p{n}@example.org"),
            region="Москва",
            timezone=kw.pop("timezone", "Europe/Moscow"),
            password=kw.pop("password", TEST_PASSWORD),
        )
        data.update(kw)
        with app.app_context():
            patient = create_patient(**data)
            record_consent(patient.user, ConsentKind.PERSONAL_DATA)
            db.session.commit()
            return patient.id

    return factory


@pytest.fixture
def make_center(app: Flask):
    from app.extensions import db
    from models import MedicalCenter

    def factory(name: str | None = None, profile: str = "cardiology") -> int:
        with app.app_context():
            center = MedicalCenter(
                name=name or f"Центр {next(_seq)}", profile=profile, region="Москва"
            )
            db.session.add(center)
            db.session.commit()
            return center.id

    return factory


@pytest.fixture
def make_doctor(app: Flask):
    from app.accounts import create_doctor
    from app.extensions import db

    def factory(
        *, username: str | None = None, center_id: int | None = None, is_duty: bool = False
    ) -> int:
        n = next(_seq)
        with app.app_context():
            doctor = create_doctor(
                username=username or f"doc{n}",
                password=TEST_PASSWORD,
                surname=f"Врачев{n}",
                name="Пётр",
                patronymic="",
                specialty="Кардиолог",
                email=f"doc{n}@example.org",
                center_id=center_id,
                is_duty=is_duty,
            )
            db.session.commit()
            return doctor.id

    return factory


@pytest.fixture
def make_staff(app: Flask):
    from app.accounts import create_user
    from app.extensions import db

    def factory(role: str, username: str | None = None) -> str:
        username = username or f"{role.lower()}{next(_seq)}"
        with app.app_context():
            create_user(
                username=username,
                password=TEST_PASSWORD,
                role_names=[role],
                first_name="Сотрудник",
                last_name=role,
                email=f"{username}@example.org",
            )
            db.session.commit()
        return username

    return factory


def login(client: FlaskClient, username: str, password: str = TEST_PASSWORD):
    client.get("/login/")
    return client.post(
        "/login/",
        data={"username": username, "password": password, "csrf_token": csrf_token(client)},
        follow_redirects=False,
    )


def csrf_token(client: FlaskClient, path: str = "/login/") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, f"no csrf token on {path}"
    return match.group(1)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def patient_username(app: Flask, patient_id: int) -> str:
    from app.extensions import db
    from models import Patient

    with app.app_context():
        return db.session.get(Patient, patient_id).phone


def add_shift(
    app,
    doctor_id: int,
    starts_at: datetime,
    *,
    slots: int = 4,
    minutes: int = 30,
    topic_codes: str = "",
    topics: str = "Профилактика, вопросы ЗОЖ",
):
    """A duty shift cut into `slots` slots; returns their public ids (str), earliest first.
    `topic_codes`: the DutyTopic values it takes (space-separated; "" takes every topic);
    `topics`: the shift's own words for them, shown beside the doctor's name."""
    from app.extensions import db
    from app.scheduling import generate_slots
    from models import DutyShift

    with app.app_context():
        shift = DutyShift(
            doctor_id=doctor_id,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=slots * minutes),
            slot_minutes=minutes,
            topics=topics,
            topic_codes=topic_codes,
        )
        db.session.add(shift)
        made = generate_slots(shift)
        db.session.add_all(made)
        db.session.commit()
        return [str(s.public_id) for s in made]


REFERRAL_CENTRE = "Кардиоцентр Тест"


@pytest.fixture
def catalogue(app: Flask) -> int:
    """The disease catalogue, and REFERRAL_CENTRE taking all its cardiology diseases; its id."""
    from app.catalogue import load_catalogue
    from app.extensions import db
    from models import Disease, MedicalCenter

    with app.app_context():
        load_catalogue()
        centre = MedicalCenter(name=REFERRAL_CENTRE, profile="cardiology", region="Москва")
        db.session.add(centre)
        for d in db.session.execute(
            select(Disease).where(Disease.profile == "cardiology")
        ).scalars():
            d.centers.append(centre)
        db.session.commit()
        return centre.id


def consultation_number(app: Flask, public_id) -> str:
    """The consultation's number as people see it ('26-42'), read from the database."""
    import uuid

    from app.extensions import db
    from models import Consultation

    with app.app_context():
        return db.session.execute(
            select(Consultation.display_number).where(
                Consultation.public_id == uuid.UUID(str(public_id))
            )
        ).scalar_one()


def registration_code(app: Flask, phone: str) -> str:
    """The code in the last SMS sent to `phone` (E.164), read from the outbox table the way
    staff read it on the embedded default; fails when that SMS carries no code."""
    from sqlalchemy import select

    from app.extensions import db
    from models import OutboundChannel, OutboundMessage

    with app.app_context():
        body = db.session.execute(
            select(OutboundMessage.body)
            .where(
                OutboundMessage.recipient == phone,
                OutboundMessage.channel == OutboundChannel.SMS,
            )
            .order_by(OutboundMessage.id.desc())
            .limit(1)
        ).scalar_one()
    match = re.search(r"(?<![\d:])(\d{6})(?!\d)", body)
    assert match, f"no code in the last SMS to {phone}: {body!r}"
    return match.group(1)


@pytest.fixture
def role_client(app: Flask, make_patient, make_doctor, make_staff, make_center):
    """role name → a client signed in as a fresh person of that role (app.permissions)."""
    from app.permissions import ADMIN, DOCTOR, DUTY_DOCTOR, MANAGER, PATIENT

    clients: dict[str, FlaskClient] = {}

    def factory(role: str) -> FlaskClient:
        if role not in clients:
            if role == PATIENT:
                username = patient_username(app, make_patient())
            elif role in (DOCTOR, DUTY_DOCTOR):
                username = f"{role.lower()}{next(_seq)}"
                make_doctor(username=username, center_id=make_center(), is_duty=role != DOCTOR)
            else:
                assert role in (ADMIN, MANAGER), role
                username = make_staff(role)
            client = app.test_client()
            assert login(client, username).status_code in (302, 303)
            clients[role] = client
        return clients[role]

    return factory


def free_disease(
    patient_id: int, center_id: int | None, disease_id: int | None, kind: str, status: str
) -> int | None:
    """The disease for a test consultation, or None when the patient already has an open
    application to this centre for it: the database allows one
    (uq_consultation_open_application), and tests often give one patient several."""
    from app.extensions import db
    from models import OPEN_STATUSES, Consultation

    if kind != "centre_request" or status not in OPEN_STATUSES:
        return disease_id
    taken = db.session.execute(
        select(Consultation.id).where(
            Consultation.patient_id == patient_id,
            Consultation.center_id == center_id,
            Consultation.disease_id == disease_id,
            Consultation.kind == "centre_request",
            Consultation.status.in_([s.value for s in OPEN_STATUSES]),
        )
    ).first()
    return None if taken else disease_id


# ---------------------------------------------------------------------------------------------
# Small real files and rows that several test modules build (no test module imports another)
# ---------------------------------------------------------------------------------------------


def make_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_dicom(
    preamble: bytes = b"", *, modality: str = "OT", description: str = "Test study"
) -> bytes:
    """A valid 2×2 DICOM file; `preamble` is written into its 128-byte preamble (padded)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = preamble.ljust(128, b"\0")
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyDescription = description
    ds.Rows, ds.Columns = 2, 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x00\x40\x80\xff"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_image(fmt: str, size: tuple[int, int] = (16, 12)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


# What a patient reads when another patient took the slot a moment earlier.
TAKEN_RU = "Это время только что заняли. Выберите другое."


def tomorrow_at(hour: int, days: int = 1) -> datetime:
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days, hours=hour)


def active_bookings(app, slot_id: str) -> int:
    """How many consultations hold the slot (the statuses that keep a slot taken)."""
    from app.extensions import db
    from models import SLOT_HOLDING_STATUSES, Consultation, Slot

    with app.app_context():
        return db.session.execute(
            select(func.count(Consultation.id))
            .join(Slot, Consultation.slot_id == Slot.id)
            .where(
                Slot.public_id == uuid.UUID(slot_id),
                Consultation.status.in_([str(s) for s in SLOT_HOLDING_STATUSES]),
            )
        ).scalar_one()
