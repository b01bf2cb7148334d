"""Patient B, the access matrix's target (tests/test_access_matrix.py): B's markers and the
explicit keys of B's rows, and `stage_world`, which stages B, patient A, two centres, their
doctors, a duty doctor and staff, and lists B's identifiers the sweep fills URLs with."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event, select

from tests.conftest import patient_username

# --- B's markers: none may reach a persona who must not see B ----------------------------------

SURNAME = "Секретова"
DOC_NAME = "секрет-бета.pdf"
LOOSE_DOC_NAME = "секрет-бета-копия.pdf"  # B's second document, in no consultation: deletable
DOC_NOTE = "тайная-заметка-Б"
NOTIFICATION_TEXT = "уведомление-для-Б"
PDF_BYTES = "OblakoSecretPdfOfPatientBq7x2k9"  # alphanumeric: pypdf escapes the rest

MARKERS = {
    "surname": SURNAME,
    "document name": DOC_NAME.removesuffix(".pdf"),  # the stem: both of B's documents
    "document note": DOC_NOTE,
    "notification": NOTIFICATION_TEXT,
    "pdf bytes": PDF_BYTES,
}
EVERYTHING = frozenset(MARKERS)

# B's rows get explicit keys far above any other row's: a FAB CRUD route given "B's id" can then
# only reach B's row, never (as Admin or Manager legitimately may) delete an account, role or
# centre that happens to share a small integer with it. B's patient, document, consultation and
# notification share one key and one public UUID (a key is unique per table, not across
# tables): each route is then tried with B's row of whatever kind it takes, with no list of
# which route takes which kind, in far fewer requests than a key per row. The loose document,
# in the same table as the first, has its own.
B_ID = 70_001
B_PUBLIC_ID = uuid.UUID("7b0b0b0b-0000-4000-8000-000000070001")
B_PATIENT_ID = B_DOCUMENT_ID = B_CONSULTATION_ID = B_NOTIFICATION_ID = B_ID
B_LOOSE_DOCUMENT_ID = 70_002
LARGE_INT = "9999999999"  # past a 32-bit integer column: PostgreSQL refuses it in a query


def secret_pdf() -> bytes:
    """A real PDF (it passes the upload's parser) carrying PDF_BYTES in its metadata."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": PDF_BYTES})
    out = io.BytesIO()
    writer.write(out)
    data = out.getvalue()
    assert PDF_BYTES.encode() in data
    return data


def plain_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@contextmanager
def explicit_id(model: type, value: int, public_id: uuid.UUID | None = None) -> Iterator[None]:
    """Give the next inserted row of `model` the primary key `value`, and `public_id` when
    given (services build the row)."""

    def assign(_mapper, _connection, target) -> None:
        if target.id is None:
            target.id = value
            if public_id is not None:
                target.public_id = public_id

    event.listen(model, "before_insert", assign)
    try:
        yield
    finally:
        event.remove(model, "before_insert", assign)


@dataclass
class World:
    usernames: dict[str, str | None]
    b_username: str
    b_loose_document_public_id: str
    candidates: list[str] = field(default_factory=list)


def stage_world(app, make_patient, make_doctor, make_center, make_staff) -> World:
    from app.catalogue import load_catalogue
    from app.documents.upload import store_document
    from app.extensions import db
    from models import Consultation, Doctor, MedicalDocument, Notification, Patient

    c1, c2 = make_center("Центр Один"), make_center("Центр Два")
    doctor_c1, doctor_c2 = make_doctor(center_id=c1), make_doctor(center_id=c2)
    duty = make_doctor(is_duty=True)
    admin, manager = make_staff("Admin"), make_staff("Manager")
    patient_a = make_patient(surname="Обычная")
    other = make_patient(surname="Другова")  # C2's own patient: C2's screens are not empty
    with explicit_id(Patient, B_PATIENT_ID, B_PUBLIC_ID):
        patient_b = make_patient(surname=SURNAME)
    assert patient_b == B_PATIENT_ID

    with app.app_context():
        types = load_catalogue()
        a, b = db.session.get(Patient, patient_a), db.session.get(Patient, patient_b)
        store_document(
            a,
            by=a.user,
            stream=io.BytesIO(plain_pdf()),
            filename="моя-выписка.pdf",
            document_type=types["discharge"],
            note="заметка А",
        )
        with explicit_id(MedicalDocument, B_DOCUMENT_ID, B_PUBLIC_ID):
            b_doc = store_document(
                b,
                by=b.user,
                stream=io.BytesIO(secret_pdf()),
                filename=DOC_NAME,
                document_type=types["discharge"],
                note=DOC_NOTE,
            )
            db.session.flush()
        with explicit_id(MedicalDocument, B_LOOSE_DOCUMENT_ID):
            b_loose = store_document(
                b,
                by=b.user,
                stream=io.BytesIO(secret_pdf()),
                filename=LOOSE_DOC_NAME,
                document_type=types["lab"],
                note=DOC_NOTE,
            )
            db.session.flush()
        assert (b_doc.id, b_doc.original_name, b_doc.note) == (B_DOCUMENT_ID, DOC_NAME, DOC_NOTE)
        assert (b_loose.id, b_loose.original_name) == (B_LOOSE_DOCUMENT_ID, LOOSE_DOC_NAME)
        b_consultation = Consultation(
            id=B_CONSULTATION_ID,
            public_id=B_PUBLIC_ID,
            kind="centre_request",
            status="requested",
            patient_id=b.id,
            center_id=c1,
            complaints="жалобы Б",
        )
        b_consultation.documents.append(b_doc)
        duty_id = db.session.execute(select(Doctor.id).where(Doctor.id == duty)).scalar_one()
        db.session.add_all(
            [
                b_consultation,
                Consultation(
                    kind="centre_request", status="requested", patient_id=other, center_id=c2
                ),
                Consultation(kind="duty", status="scheduled", patient_id=a.id, doctor_id=duty_id),
                Notification(user_id=a.user_id, kind="test", text="уведомление-для-А", link="/"),
            ]
        )
        b_notification = Notification(
            id=B_NOTIFICATION_ID,
            public_id=B_PUBLIC_ID,
            user_id=b.user_id,
            kind="test",
            text=NOTIFICATION_TEXT,
            link="/cabinet/documents/",
        )
        db.session.add(b_notification)
        db.session.commit()
        shared = {b.public_id, b_doc.public_id, b_consultation.public_id, b_notification.public_id}
        assert shared == {B_PUBLIC_ID}, shared
        world = World(
            usernames={
                "anonymous": None,
                "admin": admin,
                "manager": manager,
                "doctor_c1": db.session.get(Doctor, doctor_c1).user.username,
                "doctor_c2": db.session.get(Doctor, doctor_c2).user.username,
                "duty_doctor": db.session.get(Doctor, duty).user.username,
                "patient_a": a.phone,
            },
            b_username=b.phone,
            b_loose_document_public_id=str(b_loose.public_id),
        )
    assert patient_username(app, patient_b) == world.b_username
    world.candidates = [
        str(B_ID),
        str(B_PUBLIC_ID),
        str(B_LOOSE_DOCUMENT_ID),
        world.b_loose_document_public_id,
        str(uuid.uuid4()),
        LARGE_INT,
    ]
    return world
