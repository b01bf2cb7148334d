"""The conclusion as a PDF: fpdf2 with a Cyrillic TrueType font from CONCLUSION_FONT_PATH
(installed by `make setup` from Debian's fonts-dejavu-core). A missing font is an error, never a
silent fall back to a core font that cannot print Russian. Built deterministically (creation
date = issued_at): the same conclusion gives the same bytes. A download is the PDF stored at
issue time; it is rebuilt only when no file is kept.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _

from app.conclusions import PDF_LOCALE, ConclusionFontMissing
from app.extensions import db
from app.storage import path_for_key
from models import Conclusion, Consultation

log = logging.getLogger(__name__)


def font_path() -> Path:
    """The Cyrillic TTF the PDF embeds (CONCLUSION_FONT_PATH); a clear error when missing."""
    configured = current_app.config.get("CONCLUSION_FONT_PATH") or ""
    path = Path(configured)
    if not configured or not path.is_file():
        raise ConclusionFontMissing(
            f"CONCLUSION_FONT_PATH={configured!r} is not a file: install the font with "
            "`make setup` (Debian package fonts-dejavu-core) or point CONCLUSION_FONT_PATH at "
            "a TrueType font with Cyrillic glyphs"
        )
    return path


def _patient_zone(consultation: Consultation) -> ZoneInfo:
    for name in (consultation.patient.timezone, current_app.config.get("DEFAULT_TIMEZONE")):
        try:
            return ZoneInfo(name or "")
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("Europe/Moscow")


def _local(value: datetime, zone: ZoneInfo) -> str:
    local = value.astimezone(zone)
    offset = local.utcoffset() or timedelta(0)
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    minutes = rest // 60
    utc = f"UTC{hours:+d}" + (f":{minutes:02d}" if minutes else "")
    return f"{local:%d.%m.%Y %H:%M} ({utc})"


def conclusion_pdf(conclusion: Conclusion, *, superseded: Conclusion | None = None) -> bytes:
    """The conclusion as a PDF with an embedded Cyrillic font; same input, same bytes."""
    from fpdf import FPDF

    font = font_path()
    consultation = conclusion.consultation
    patient = consultation.patient
    doctor = conclusion.author
    center = consultation.center or doctor.center
    zone = _patient_zone(consultation)
    number = consultation.display_number
    if superseded is None and conclusion.supersedes_id:
        superseded = db.session.get(Conclusion, conclusion.supersedes_id)

    with force_locale(PDF_LOCALE):
        service = _("Health Cloud")
        header = center.name if center is not None else service
        title = _("Doctor's conclusion on the telemedicine consultation")
        rows = [
            (_("Consultation"), f"№{number}"),
            (_("Date of issue"), _local(conclusion.issued_at, zone)),
            (_("Patient"), patient.full_name),
            (_("Date of birth"), f"{patient.birth_date:%d.%m.%Y}"),
            (_("Doctor"), f"{doctor.full_name}, {doctor.specialty}"),
        ]
        if conclusion.version > 1 or superseded is not None:
            replaced = superseded.version if superseded is not None else conclusion.version - 1
            version_line = _(
                "Version %(version)d, replaces version %(previous)d",
                version=conclusion.version,
                previous=replaced,
            )
        else:
            version_line = _("Version %(version)d", version=conclusion.version)
        diagnosis = conclusion.diagnosis
        if conclusion.icd10_code:
            diagnosis = _(
                "%(diagnosis)s (ICD-10: %(code)s)", diagnosis=diagnosis, code=conclusion.icd10_code
            )
        sections = [
            (_("Complaints and history"), conclusion.complaints_history),
            (_("Findings on the documents"), conclusion.findings or "—"),
            (_("Diagnosis"), diagnosis),
            (_("Recommendations"), conclusion.recommendations),
            (
                _("In-person visit"),
                _("An in-person visit to a doctor is needed.")
                if conclusion.in_person_visit_needed
                else _("No in-person visit is needed."),
            ),
            (_("Next steps"), conclusion.next_steps or "—"),
        ]
        signature = _("Doctor: %(name)s", name=doctor.full_name)
        footer = _("Issued through the telemedicine service %(service)s.", service=service)

    pdf = FPDF(format="A4")
    pdf.set_creation_date(conclusion.issued_at)  # deterministic: same conclusion, same bytes
    pdf.set_title(f"{title} №{number}")
    pdf.set_author(doctor.full_name)
    pdf.set_lang("ru")
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_font("Body", fname=str(font))
    pdf.add_page()

    def line(text: str, size: float = 11, height: float = 6, *, align: str = "L") -> None:
        pdf.set_font("Body", size=size)
        pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT", align=align)

    line(header, 13, 7, align="C")
    pdf.ln(2)
    line(title, 15, 8, align="C")
    line(version_line, 10, 6, align="C")
    pdf.ln(4)
    for label, value in rows:
        line(f"{label}: {value}")
    for label, value in sections:
        pdf.ln(3)
        line(label, 12, 7)
        line(value)
    pdf.ln(8)
    line(signature)
    pdf.ln(4)
    line(footer, 8, 4)
    return bytes(pdf.output())


def conclusion_bytes(conclusion: Conclusion) -> bytes:
    """The issued PDF as stored; rebuilt (deterministically) only when no file is kept."""
    if conclusion.pdf_storage_key:
        path = path_for_key(conclusion.pdf_storage_key)
        if path.is_file():
            return path.read_bytes()
        log.error("conclusion %s: stored PDF is missing, rebuilding it", conclusion.public_id)
    return conclusion_pdf(conclusion)


def pdf_filename(conclusion: Conclusion) -> str:
    number = conclusion.consultation.display_number
    with force_locale(PDF_LOCALE):
        stem = _("Conclusion")
    return f"{stem}-{number}-v{conclusion.version}.pdf"
