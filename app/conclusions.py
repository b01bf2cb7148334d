"""Starting a consultation and the doctor's conclusion: versions, immutability, the PDF.

- start_consultation: scheduled → in_progress, by the assigned doctor (or, when none is
  assigned, a doctor of the consultation's centre, who becomes the assigned one), no earlier
  than START_EARLY before the appointed time.
- issue_conclusion: version 1 completes an in-progress consultation; a later correction is a
  NEW row (version + 1, supersedes_id = the previous one). An issued row is never updated or
  deleted: the mapper events below refuse it at flush time, and bulk UPDATE / DELETE statements
  on the table are refused before they reach the database.
- conclusion_pdf: fpdf2 with a Cyrillic TrueType font from CONCLUSION_FONT_PATH (installed by
  `make setup` from Debian's fonts-dejavu-core). A missing font is an error, never a silent
  fall back to a core font that cannot print Russian.

The PDF is produced once, at issue time, and kept in the documents storage
(Conclusion.pdf_storage_key): a download is then exactly the document that was issued, whatever
happens later to the doctor's name, the centre, the font or the fpdf2 version. The PDF is also
built deterministically (creation date = issued_at), so a row without a stored file (demo data,
a lost file) can be rebuilt to the same bytes.

Services take the actor explicitly, raise ConsultationError with a translatable message, and
never commit (DESIGN §3).
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import ColumnElement, event, func, or_, select
from sqlalchemy.orm import Session, joinedload
from werkzeug.routing import BuildError

from app import documents as docs
from app.audit import audit
from app.catalogue import normalize_icd10, valid_icd10
from app.consultations import (
    ConsultationError,
    patient_consultation_condition,
    staff_consultation_condition,
)
from app.extensions import db
from app.i18n import local_datetime
from app.notifications import notify
from models import (
    AuditOutcome,
    Conclusion,
    Consultation,
    ConsultationStatus,
    Doctor,
    utcnow,
)

log = logging.getLogger(__name__)

START_EARLY = timedelta(minutes=15)
PDF_LOCALE = "ru"  # a medical document of a Russian service: always in Russian
TEXT_MAX = 10_000
DIAGNOSIS_MAX = 2_000


class ConclusionError(ConsultationError):
    """Issuing or correcting a conclusion was refused; str() is shown to the doctor."""


class ConclusionImmutableError(RuntimeError):
    """Raised when code tries to change or delete an issued conclusion row."""


class ConclusionFontMissing(RuntimeError):
    """The configured Cyrillic font for the conclusion PDF is not installed."""


# ---------------------------------------------------------------------------------------------
# Immutability of issued conclusions (ORM level)
# ---------------------------------------------------------------------------------------------


@event.listens_for(Conclusion, "before_update")
def _refuse_update(mapper, connection, target: Conclusion) -> None:
    from sqlalchemy import inspect

    state = inspect(target)
    changed = [a.key for a in state.attrs if a.history.has_changes()]
    # Relationship attributes (consultation, author) count as changes only if their foreign
    # key column changes too, and those are columns of this table: check columns only.
    changed = [k for k in changed if k in mapper.columns]
    if changed:
        raise ConclusionImmutableError(
            f"an issued conclusion is never changed (tried: {', '.join(sorted(changed))}); "
            "issue a new version instead"
        )


@event.listens_for(Conclusion, "before_delete")
def _refuse_delete(mapper, connection, target: Conclusion) -> None:
    raise ConclusionImmutableError("an issued conclusion is never deleted")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state) -> None:
    if (state.is_update or state.is_delete) and state.bind_mapper is not None:
        if state.bind_mapper.class_ is Conclusion:
            raise ConclusionImmutableError("issued conclusions are never updated or deleted")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _link(endpoint: str, fallback: str, **values) -> str:
    """A site-relative link for a notification; the fallback when the view is not there."""
    if endpoint in current_app.view_functions:
        try:
            return url_for(endpoint, _external=False, **values)
        except (BuildError, RuntimeError):
            pass
    return fallback


def _patient_consultation_link(consultation: Consultation) -> str:
    fallback = f"/cabinet/consultations/{consultation.public_id}"
    return _link("MyConsultationView.show", fallback, public_id=consultation.public_id)


def pdf_link(conclusion: Conclusion) -> str:
    return _link(
        "ConclusionView.pdf",
        f"/conclusions/{conclusion.public_id}.pdf",
        public_id=conclusion.public_id,
    )


def _lock(consultation: Consultation) -> None:
    """Re-read the consultation under a row lock (PostgreSQL; SQLite serialises writers)."""
    db.session.refresh(consultation, with_for_update=True)


def _same_doctor(consultation: Consultation, doctor: Doctor | None) -> bool:
    return doctor is not None and consultation.doctor_id == doctor.id


# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------

_NOT_STARTABLE = {
    ConsultationStatus.IN_PROGRESS: _l("The consultation has already started."),
    ConsultationStatus.COMPLETED: _l("The consultation is already completed."),
    ConsultationStatus.CANCELLED: _l("The consultation was cancelled and cannot be started."),
    ConsultationStatus.REJECTED: _l("The application was rejected: there is nothing to start."),
    ConsultationStatus.MISSED: _l("The consultation was missed and cannot be started."),
}


def can_start(consultation: Consultation, doctor: Doctor | None) -> bool:
    """Whether the start button makes sense for this doctor now (the service decides)."""
    if doctor is None or not doctor.active:
        return False
    if consultation.status != ConsultationStatus.SCHEDULED:
        return False
    if consultation.doctor_id is None:
        return doctor.center_id is not None and doctor.center_id == consultation.center_id
    return consultation.doctor_id == doctor.id


def start_consultation(consultation: Consultation, *, by: Doctor | None) -> None:
    """scheduled → in_progress, by the consultation's doctor, from 15 minutes before its time."""
    if by is None or not by.active:
        raise ConsultationError(_l("Only the consultation's doctor can start it."))
    _lock(consultation)
    status = consultation.status
    if status != ConsultationStatus.SCHEDULED:
        raise ConsultationError(
            _NOT_STARTABLE.get(
                status, _l("Only a scheduled consultation can be started: set its time first.")
            )
        )
    if consultation.doctor_id is None:
        # An application to a centre scheduled without naming a doctor: any doctor of that
        # centre may take it, and becomes its doctor.
        if by.center_id is None or by.center_id != consultation.center_id:
            raise ConsultationError(_l("Only the consultation's doctor can start it."))
    elif consultation.doctor_id != by.id:
        raise ConsultationError(_l("Only the consultation's doctor can start it."))
    if consultation.scheduled_at is None:
        raise ConsultationError(
            _l("Only a scheduled consultation can be started: set its time first.")
        )
    now = utcnow()
    if now < consultation.scheduled_at - START_EARLY:
        raise ConsultationError(
            _l(
                "It is too early: the consultation can be started no earlier than 15 minutes "
                "before its time (%(at)s).",
                at=local_datetime(consultation.scheduled_at, "short"),
            )
        )
    if consultation.doctor_id is None:
        consultation.doctor_id = by.id
        consultation.doctor = by
    consultation.status = ConsultationStatus.IN_PROGRESS
    consultation.started_at = now
    audit(
        "consultation.start",
        actor=by.user,
        obj_type="consultation",
        obj_id=consultation.public_id,
        patient_id=consultation.patient_id,
    )
    notify(
        consultation.patient.user,
        "consultation_started",
        lambda: _(
            "The consultation has started: the doctor is waiting for you (№%(number)s).",
            number=consultation.display_number,
        ),
        link=_patient_consultation_link(consultation),
        # Someone waiting on the line now: the cabinet and an SMS, no e-mail read next day.
        email=False,
        dedupe_key=f"consultation_started:{consultation.public_id}",
    )


# ---------------------------------------------------------------------------------------------
# issue
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConclusionData:
    complaints_history: str = ""
    findings: str = ""
    diagnosis: str = ""
    icd10_code: str = ""
    recommendations: str = ""
    in_person_visit_needed: bool = False
    next_steps: str = ""


TEXT_FIELDS = (
    "complaints_history",
    "findings",
    "diagnosis",
    "icd10_code",
    "recommendations",
    "next_steps",
)
REQUIRED_FIELDS = {
    "complaints_history": _l("Describe the complaints and the history."),
    "diagnosis": _l("Enter the diagnosis."),
    "icd10_code": _l("Enter the ICD-10 code of the diagnosis."),
    "recommendations": _l("Enter the recommendations."),
}
ICD10_INVALID = _l("The ICD-10 code must look like I21 or I21.0: a Latin letter and two digits.")


def _clean_text(value: str | None) -> str:
    text = (value or "").replace("\r\n", "\n").replace("\r", "\n")
    # Control characters (other than new lines and tabs) have no place in a medical document.
    text = "".join(ch for ch in text if ch in "\n\t" or (ch >= " " and ch != "\x7f"))
    return text.strip()


def clean_data(data: ConclusionData) -> ConclusionData:
    values = {f.name: getattr(data, f.name) for f in fields(ConclusionData)}
    for name in TEXT_FIELDS:
        values[name] = _clean_text(values[name])
    values["icd10_code"] = normalize_icd10(values["icd10_code"])
    values["in_person_visit_needed"] = bool(values["in_person_visit_needed"])
    return ConclusionData(**values)


def validate_data(data: ConclusionData) -> dict[str, str]:
    """Field name → Russian-ready message, for each problem; empty when the data is good."""
    problems: dict[str, str] = {}
    for name, message in REQUIRED_FIELDS.items():
        if not getattr(data, name):
            problems[name] = message
    if data.icd10_code and not valid_icd10(data.icd10_code):
        problems["icd10_code"] = ICD10_INVALID
    if len(data.diagnosis) > DIAGNOSIS_MAX:
        problems["diagnosis"] = _l(
            "The text is too long: at most %(n)d characters.", n=DIAGNOSIS_MAX
        )
    for name in ("complaints_history", "findings", "recommendations", "next_steps"):
        if len(getattr(data, name)) > TEXT_MAX:
            problems[name] = _l("The text is too long: at most %(n)d characters.", n=TEXT_MAX)
    return problems


def conclusions_of(consultation: Consultation) -> list[Conclusion]:
    """Every issued version, newest first (the history stays visible)."""
    stmt = (
        select(Conclusion)
        .options(joinedload(Conclusion.author))
        .where(Conclusion.consultation_id == consultation.id)
        .order_by(Conclusion.version.desc())
    )
    return list(db.session.execute(stmt).scalars())


def latest_conclusion(consultation: Consultation) -> Conclusion | None:
    versions = conclusions_of(consultation)
    return versions[0] if versions else None


def prefill(consultation: Consultation) -> ConclusionData:
    """The form's starting point: the latest version, else what the application says."""
    latest = latest_conclusion(consultation)
    if latest is not None:
        return ConclusionData(**{f.name: getattr(latest, f.name) for f in fields(ConclusionData)})
    disease = consultation.disease
    history = "\n".join(
        p for p in (consultation.complaints, consultation.question) if p and p.strip()
    )
    diagnosis = consultation.diagnosis_text or (disease.name if disease else "")
    return ConclusionData(
        complaints_history=history,
        diagnosis=diagnosis,
        icd10_code=disease.icd10_code if disease else "",
    )


def check_can_issue(consultation: Consultation, by: Doctor | None) -> None:
    """Raise ConclusionError unless `by` may issue a conclusion for it now."""
    if by is None or not by.active or not _same_doctor(consultation, by):
        raise ConclusionError(_l("Only the consultation's doctor can issue its conclusion."))
    status = consultation.status
    if status in (ConsultationStatus.SCHEDULED, ConsultationStatus.REQUESTED):
        raise ConclusionError(_l("Start the consultation before issuing the conclusion."))
    if status not in (ConsultationStatus.IN_PROGRESS, ConsultationStatus.COMPLETED):
        raise ConclusionError(
            _l("A conclusion can be issued only for a consultation that took place.")
        )


def may_issue(consultation: Consultation, by: Doctor | None) -> bool:
    try:
        check_can_issue(consultation, by)
    except ConclusionError:
        return False
    return True


def _issued_text(number: str, version: int):
    def render() -> str:
        if version == 1:
            return _("The doctor's conclusion is ready (consultation №%(number)s).", number=number)
        return _(
            "The doctor has corrected the conclusion (consultation №%(number)s): "
            "version %(version)d replaces the previous one.",
            number=number,
            version=version,
        )

    return render


def issue_conclusion(
    consultation: Consultation, *, by: Doctor | None, data: ConclusionData
) -> Conclusion:
    """Issue version 1 (completes the consultation) or a correction (a new version)."""
    check_can_issue(consultation, by)
    data = clean_data(data)
    problems = validate_data(data)
    if problems:
        raise ConclusionError(next(iter(problems.values())))
    _lock(consultation)
    check_can_issue(consultation, by)  # again, under the lock: it may have changed meanwhile
    status = consultation.status
    previous = latest_conclusion(consultation)
    if status == ConsultationStatus.COMPLETED and previous is None:
        # Completed without a conclusion cannot happen through the service; refuse rather
        # than guess which version this would be.
        raise ConclusionError(
            _l("A conclusion can be issued only for a consultation that took place.")
        )
    now = utcnow()
    conclusion = Conclusion(
        public_id=uuid.uuid4(),
        consultation_id=consultation.id,
        version=(previous.version + 1) if previous else 1,
        supersedes_id=previous.id if previous else None,
        author_id=by.id,
        issued_at=now,
        **{f.name: getattr(data, f.name) for f in fields(ConclusionData)},
    )
    # Relationships for the PDF, without adding the row to the session yet: the row is
    # inserted once, complete with its PDF key, and never updated afterwards.
    conclusion.consultation = consultation
    conclusion.author = by
    try:
        pdf = conclusion_pdf(conclusion, superseded=previous)
    except ConclusionFontMissing as exc:
        log.error("conclusion PDF: %s", exc)
        raise ConclusionError(
            _l(
                "The conclusion PDF cannot be produced: the Cyrillic font is not installed. "
                "Nothing has been issued; ask the administrator to run the setup step."
            )
        ) from exc
    stored = docs.write_file(
        io.BytesIO(pdf), max_bytes=int(current_app.config["MAX_DOCUMENT_BYTES"])
    )
    docs.on_rollback(lambda key=stored.key: docs.remove_stored(key))
    conclusion.pdf_storage_key = stored.key
    db.session.add(conclusion)
    first = previous is None
    if first:
        consultation.status = ConsultationStatus.COMPLETED
        consultation.completed_at = now
    db.session.flush()
    audit(
        "conclusion.issue" if first else "conclusion.correct",
        actor=by.user,
        obj_type="conclusion",
        obj_id=conclusion.public_id,
        patient_id=consultation.patient_id,
    )
    if first:
        audit(
            "consultation.complete",
            actor=by.user,
            obj_type="consultation",
            obj_id=consultation.public_id,
            patient_id=consultation.patient_id,
        )
    notify(
        consultation.patient.user,
        "conclusion_issued" if first else "conclusion_corrected",
        _issued_text(consultation.display_number, conclusion.version),
        link=pdf_link(conclusion),
        dedupe_key=f"conclusion:{conclusion.public_id}",
    )
    return conclusion


# ---------------------------------------------------------------------------------------------
# Reading, with scope
# ---------------------------------------------------------------------------------------------


def conclusion_condition(user) -> ColumnElement[bool]:
    """Condition on Consultation: whose conclusions the user may download.

    The patient their own; Admin all; a Doctor those of their centre and their own; a
    DutyDoctor their own (the same scope as the consultation itself, app.consultations).
    Managers none: a conclusion is medical content.
    """
    return or_(patient_consultation_condition(user), staff_consultation_condition(user))


def find_conclusion(user, public_id: uuid.UUID | str) -> Conclusion | None:
    """The conclusion if the user may download it, else None; every attempt is audited."""
    try:
        pid = public_id if isinstance(public_id, uuid.UUID) else uuid.UUID(str(public_id))
    except ValueError:
        return None
    conclusion = db.session.execute(
        select(Conclusion)
        .join(Consultation, Consultation.id == Conclusion.consultation_id)
        .options(joinedload(Conclusion.consultation), joinedload(Conclusion.author))
        .where(Conclusion.public_id == pid, conclusion_condition(user))
    ).scalar_one_or_none()
    if conclusion is None:
        foreign = db.session.execute(
            select(Consultation.patient_id)
            .join(Conclusion, Conclusion.consultation_id == Consultation.id)
            .where(Conclusion.public_id == pid)
        ).scalar_one_or_none()
        if foreign is not None:
            audit(
                "conclusion.download",
                actor=user,
                obj_type="conclusion",
                obj_id=pid,
                patient_id=foreign,
                outcome=AuditOutcome.DENIED,
            )
        return None
    audit(
        "conclusion.download",
        actor=user,
        obj_type="conclusion",
        obj_id=conclusion.public_id,
        patient_id=conclusion.consultation.patient_id,
    )
    return conclusion


def conclusion_bytes(conclusion: Conclusion) -> bytes:
    """The issued PDF as stored; rebuilt (deterministically) only when no file is kept."""
    if conclusion.pdf_storage_key:
        path = docs.path_for_key(conclusion.pdf_storage_key)
        if path.is_file():
            return path.read_bytes()
        log.error("conclusion %s: stored PDF is missing, rebuilding it", conclusion.public_id)
    return conclusion_pdf(conclusion)


def pdf_filename(conclusion: Conclusion) -> str:
    number = conclusion.consultation.display_number
    with force_locale(PDF_LOCALE):
        stem = _("Conclusion")
    return f"{stem}-{number}-v{conclusion.version}.pdf"


def versions_count(consultation: Consultation) -> int:
    return int(
        db.session.execute(
            select(func.count(Conclusion.id)).where(Conclusion.consultation_id == consultation.id)
        ).scalar_one()
    )


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------


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
