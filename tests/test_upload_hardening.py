"""Uploads, hardened (issue 15): DICOM preambles are zeroed, a patient's uploads have a quota.

Item 3: a DICOM file's 128-byte preamble is the application's to fill, so a Windows executable
or an HTML page can hide in a valid .dcm ("PE-DICOM", CVE-2019-11687). It is stored (and so
served) as zeros; the dataset after it is untouched and still parses.

Item 8: a patient's own uploads are limited per day and in total bytes, with a Russian message
naming the limit; uploads by staff are not limited; one patient's count is not another's; the
limit holds when uploads race (the count is taken under a lock in the inserting transaction).
"""

from __future__ import annotations

import hashlib
import io
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.conftest import csrf_token, login, make_pdf, patient_username
from tests.conftest import make_dicom as build_dicom

UPLOAD = "/cabinet/documents/upload"
PER_DAY_RU = "За один день можно загрузить не более {n} документов"
TOTAL_RU = "Этот файл не помещается: все ваши документы вместе могут занимать не более {limit}"


# ---------------------------------------------------------------------------------------------
# Files and helpers
# ---------------------------------------------------------------------------------------------


def make_dicom(preamble: bytes) -> bytes:
    """A valid DICOM file whose preamble carries `preamble` (padded to 128 bytes)."""
    data = build_dicom(preamble, modality="MR", description="Brain")
    assert data[:128] == preamble.ljust(128, b"\0") and data[128:132] == b"DICM"
    return data


# A PE executable's DOS header ("MZ", e_lfanew at 0x3c) and an HTML page, each in the preamble.
PE_PREAMBLE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 46 + b"\x80\x00\x00\x00"
)
HTML_PREAMBLE = b"<html><body><script>alert(document.cookie)</script></body></html>"


@pytest.fixture
def types(app):
    from app.catalogue import load_catalogue
    from app.extensions import db

    with app.app_context():
        loaded = load_catalogue()
        db.session.commit()
        return {code: t.id for code, t in loaded.items()}


@pytest.fixture(autouse=True)
def empty_storage(app):
    import shutil

    shutil.rmtree(Path(app.config["STORAGE_DIR"]) / "documents", ignore_errors=True)


def patient_client(app, patient_id: int):
    client = app.test_client()
    assert login(client, patient_username(app, patient_id)).status_code == 302
    return client


def upload(client, types, content: bytes, filename: str, type_code: str = "discharge"):
    return client.post(
        UPLOAD,
        data={
            "csrf_token": csrf_token(client, UPLOAD),
            "file": (io.BytesIO(content), filename),
            "document_type": str(types[type_code]),
        },
        content_type="multipart/form-data",
    )


def rows_of(app, patient_id: int) -> list[tuple[str, str, int]]:
    """(public_id, storage_key, size) of the patient's documents, oldest first."""
    from app.extensions import db
    from models import MedicalDocument

    with app.app_context():
        return [
            (str(d.public_id), d.storage_key, d.size_bytes, d.sha256)
            for d in db.session.execute(
                select(MedicalDocument)
                .where(MedicalDocument.patient_id == patient_id)
                .order_by(MedicalDocument.id)
            ).scalars()
        ]


def stored_bytes(app, key: str) -> bytes:
    from app.storage import path_for_key

    with app.app_context():
        return path_for_key(key).read_bytes()


def stored_files(app) -> list[Path]:
    root = Path(app.config["STORAGE_DIR"]) / "documents"
    return sorted(p for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Item 3: the DICOM preamble
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preamble", [PE_PREAMBLE, HTML_PREAMBLE], ids=["MZ", "html"])
def test_dicom_is_stored_and_served_with_a_zeroed_preamble(app, make_patient, types, preamble):
    import pydicom

    original = make_dicom(preamble)
    pid = make_patient()
    client = patient_client(app, pid)
    assert upload(client, types, original, "МРТ.dcm", "mri").status_code == 302
    [(public_id, key, size, sha)] = rows_of(app, pid)

    expected = bytes(128) + original[128:]
    stored = stored_bytes(app, key)
    assert stored == expected  # zeros, "DICM", and the dataset exactly as uploaded
    assert size == len(stored) and sha == hashlib.sha256(stored).hexdigest()

    download = client.get(f"/cabinet/documents/{public_id}/download")
    assert download.status_code == 200
    assert download.data[:132] == bytes(128) + b"DICM"
    assert preamble[:16] not in download.data
    dataset = pydicom.dcmread(io.BytesIO(download.data))
    assert dataset.Modality == "MR" and dataset.StudyDescription == "Brain"
    assert dataset.PixelData == b"\x00\x40\x80\xff"


def test_a_pdf_is_stored_byte_for_byte(app, make_patient, types):
    """Only the DICOM preamble is rewritten: other files are kept exactly as uploaded."""
    pdf = make_pdf()
    pid = make_patient()
    assert upload(patient_client(app, pid), types, pdf, "Выписка.pdf").status_code == 302
    [(_pub, key, _size, sha)] = rows_of(app, pid)
    assert stored_bytes(app, key) == pdf and sha == hashlib.sha256(pdf).hexdigest()


# ---------------------------------------------------------------------------------------------
# Item 8: the upload quota
# ---------------------------------------------------------------------------------------------


def test_upload_beyond_the_daily_count_is_refused(app, make_patient, types, monkeypatch):
    monkeypatch.setitem(app.config, "PATIENT_UPLOADS_PER_DAY", 2)
    pid, other = make_patient(), make_patient()
    client = patient_client(app, pid)
    for _ in range(2):
        assert upload(client, types, make_pdf(), "Анализы.pdf").status_code == 302
    before = rows_of(app, pid)
    kept = {key: stored_bytes(app, key) for _p, key, _s, _h in before}

    refused = upload(client, types, make_pdf(), "Ещё.pdf")
    assert refused.status_code == 400
    assert PER_DAY_RU.format(n=2) in refused.get_data(as_text=True)
    # Nothing already saved is lost, and the refused file is not left behind.
    assert rows_of(app, pid) == before
    assert {key: stored_bytes(app, key) for key in kept} == kept
    assert len(stored_files(app)) == 2

    # Another patient's count is their own.
    assert upload(patient_client(app, other), types, make_pdf(), "Моё.pdf").status_code == 302

    # The count is per day (the patient's): yesterday's uploads leave today free.
    from app.extensions import db
    from models import MedicalDocument, utcnow

    with app.app_context():
        db.session.execute(
            update(MedicalDocument)
            .where(MedicalDocument.patient_id == pid)
            .values(uploaded_at=utcnow() - timedelta(days=1, hours=1))
        )
        db.session.commit()
    assert upload(client, types, make_pdf(), "Завтра.pdf").status_code == 302


def test_upload_beyond_the_total_bytes_is_refused(app, make_patient, types, monkeypatch):
    pdf = make_pdf()
    monkeypatch.setitem(app.config, "PATIENT_UPLOAD_TOTAL_BYTES", 2 * len(pdf) + 10)
    pid = make_patient()
    client = patient_client(app, pid)
    for _ in range(2):
        assert upload(client, types, pdf, "Снимок.pdf").status_code == 302
    refused = upload(client, types, pdf, "Третий.pdf")
    assert refused.status_code == 400
    assert TOTAL_RU.format(limit="1 МБ") in refused.get_data(as_text=True)
    assert len(rows_of(app, pid)) == 2 and len(stored_files(app)) == 2


def test_the_total_limit_is_named_in_gigabytes(app):
    from app.quotas import size_text

    with app.test_request_context():
        assert str(size_text(2 * 2**30)) == "2 ГБ"
        assert str(size_text(300 * 2**20)) == "300 МБ"


def test_staff_uploads_for_a_patient_are_not_limited(
    app, make_patient, make_doctor, types, monkeypatch
):
    from app.documents import DocumentError
    from app.documents.upload import store_document
    from app.extensions import db
    from models import Doctor, DocumentType, Patient

    monkeypatch.setitem(app.config, "PATIENT_UPLOADS_PER_DAY", 1)
    monkeypatch.setitem(app.config, "PATIENT_UPLOAD_TOTAL_BYTES", 1)
    pid, doctor_id = make_patient(), make_doctor()
    with app.test_request_context():
        patient = db.session.get(Patient, pid)
        doctor = db.session.get(Doctor, doctor_id)
        for _ in range(3):
            store_document(
                patient,
                by=doctor.user,
                stream=io.BytesIO(make_pdf()),
                filename="Заключение.pdf",
                document_type=db.session.get(DocumentType, types["conclusion"]),
            )
        db.session.commit()
        # ...and the patient's own upload is refused by the same limits.
        with pytest.raises(DocumentError):
            store_document(
                patient,
                by=patient.user,
                stream=io.BytesIO(make_pdf()),
                filename="Своё.pdf",
                document_type=db.session.get(DocumentType, types["other"]),
            )
        db.session.rollback()
    assert len(rows_of(app, pid)) == 3


RACERS = 6


def test_racing_uploads_stay_within_the_daily_count(app, make_patient, types, monkeypatch):
    """RACERS uploads of one patient at once, each on its own connection: exactly the limit
    gets in (fails without the lock: every racer counts before any has inserted)."""
    from app.db import unit_of_work
    from app.documents import DocumentError
    from app.documents.upload import store_document
    from app.extensions import db
    from models import DocumentType, Patient

    limit = 2
    monkeypatch.setitem(app.config, "PATIENT_UPLOADS_PER_DAY", limit)
    pid = make_patient()
    barrier = threading.Barrier(RACERS)
    outcomes: list[str] = [""] * RACERS

    class Gate(io.BytesIO):
        """The racers write their files, then all meet before the checks and inserts."""

        def read(self, n: int = -1) -> bytes:
            data = super().read(n)
            if not data:
                barrier.wait(timeout=30)
            return data

    def racer(i: int) -> None:
        with app.test_request_context():
            try:
                patient = db.session.get(Patient, pid)
                with unit_of_work():
                    store_document(
                        patient,
                        by=patient.user,
                        stream=Gate(make_pdf()),
                        filename=f"{i}.pdf",
                        document_type=db.session.get(DocumentType, types["other"]),
                    )
                outcomes[i] = "ok"
            except DocumentError as exc:
                outcomes[i] = str(exc)
            except Exception as exc:
                outcomes[i] = f"unexpected {type(exc).__name__}: {exc}"
            finally:
                db.session.remove()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    assert outcomes.count("ok") == limit, outcomes
    assert all(o == "ok" or o.startswith(PER_DAY_RU.format(n=limit)) for o in outcomes), outcomes
    assert len(rows_of(app, pid)) == limit
    assert len(stored_files(app)) == limit
