"""Starting a consultation and the doctor's conclusion: the form's rules, versions, the PDF.

- start.py         scheduled → in_progress, by the consultation's doctor, from START_EARLY on;
- form.py          the conclusion's fields: cleaning, validation, the form's starting point;
- issue.py         who may issue; version 1 completes the consultation, a correction is a new
                   row (version + 1, supersedes_id = the previous one);
- immutability.py  an issued row is never updated or deleted (refused at flush time, and bulk
                   UPDATE / DELETE on the table before they reach the database);
- access.py        the versions of a consultation, the latest one, scope-checked download;
- pdf.py           the PDF (fpdf2, a Cyrillic TrueType font from CONCLUSION_FONT_PATH).

The PDF is produced once, at issue time, and kept in the documents storage
(Conclusion.pdf_storage_key): a download is then exactly the document that was issued. It is
also built deterministically (creation date = issued_at), so a row without a stored file can be
rebuilt to the same bytes.

Services take the actor explicitly, raise ConclusionError / ConsultationError with a
translatable message, and never commit (DESIGN §3). Importing the package arms the guard of
immutability.py.
"""

from __future__ import annotations

from app.consultations import ConsultationError
from app.extensions import db
from models import Consultation, Doctor

PDF_LOCALE = "ru"  # a medical document of a Russian service: always in Russian


class ConclusionError(ConsultationError):
    """Issuing or correcting a conclusion was refused; str() is shown to the doctor."""


class ConclusionImmutableError(RuntimeError):
    """Raised when code tries to change or delete an issued conclusion row."""


class ConclusionFontMissing(RuntimeError):
    """The configured Cyrillic font for the conclusion PDF is not installed."""


def lock(consultation: Consultation) -> None:
    """Re-read the consultation under a row lock (PostgreSQL; SQLite serialises writers)."""
    db.session.refresh(consultation, with_for_update=True)


def same_doctor(consultation: Consultation, doctor: Doctor | None) -> bool:
    return doctor is not None and consultation.doctor_id == doctor.id


# Last, once the errors above exist: the guard is armed whenever the area is imported.
from app.conclusions import immutability  # noqa: E402, F401
