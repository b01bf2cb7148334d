"""The conclusion form's rules: its fields, how they are cleaned and validated, and the form's
starting point (the latest version, else what the application says)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from flask_babel import lazy_gettext as _l

from app.catalogue import normalize_icd10, valid_icd10
from app.conclusions.access import latest_conclusion
from models import Conclusion, Consultation

TEXT_MAX = 10_000
DIAGNOSIS_MAX = 2_000


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


def data_of(conclusion: Conclusion) -> ConclusionData:
    return ConclusionData(**{f.name: getattr(conclusion, f.name) for f in fields(ConclusionData)})


def prefill(consultation: Consultation) -> ConclusionData:
    """The form's starting point: the latest version, else what the application says."""
    latest = latest_conclusion(consultation)
    if latest is not None:
        return data_of(latest)
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
