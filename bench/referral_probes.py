"""What the referral import bench reads in each measured subprocess, on either side: the peak
resident set of the measured part (`RssPeak`) and the rows the import left in the database
(`_counts`: accounts, patients, consultations, SMS, the import's own record), which the parent
checks after every run.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select

# ---------------------------------------------------------------------------------------------
# Memory probes
# ---------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssPeak:
    """Peak resident set above the start of the measured part: the kernel's high-water mark,
    reset first (`echo 5 > /proc/self/clear_refs`) so the migration and the set-up don't count.
    Without /proc (not Linux), ru_maxrss - the resident set at the start (less exact)."""

    def __init__(self) -> None:
        self.reset = False
        self.start_kib = 0

    def __enter__(self) -> RssPeak:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset = True
            self.start_kib = _status_kib("VmRSS")
        except OSError:
            import resource

            self.start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def reset_peak(self) -> None:
        """Start a new high-water mark (same starting point): the next phase's own peak."""
        if self.reset:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")

    def peak_kib(self) -> int:
        if self.reset:
            return _status_kib("VmHWM") - self.start_kib
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.start_kib

    def __exit__(self, *exc: object) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The rows the run left (either side)
# ---------------------------------------------------------------------------------------------


def _counts(app: Flask) -> dict[str, Any]:
    from app.extensions import db
    from app.permissions import PATIENT
    from models import (
        Consultation,
        Model,
        OblakoUser,
        OutboundMessage,
        Patient,
        ReferralImport,
    )

    roles, user_role = Model.metadata.tables["ab_role"], Model.metadata.tables["ab_user_role"]
    with app.app_context():
        s = db.session
        role_id = s.execute(select(roles.c.id).where(roles.c.name == PATIENT)).scalar_one()
        imp = s.execute(select(ReferralImport).order_by(ReferralImport.id.desc())).scalars().first()
        sample = s.execute(
            select(OutboundMessage.body).order_by(OutboundMessage.id).limit(1)
        ).scalar_one_or_none()
        result = {
            "users": s.execute(
                select(func.count()).select_from(OblakoUser).where(OblakoUser.username.like("+7%"))
            ).scalar_one(),
            "patient_role": s.execute(
                select(func.count()).select_from(user_role).where(user_role.c.role_id == role_id)
            ).scalar_one(),
            "patients": s.execute(select(func.count()).select_from(Patient)).scalar_one(),
            "consultations": s.execute(
                select(func.count())
                .select_from(Consultation)
                .where(Consultation.kind == "referral", Consultation.status == "awaiting_documents")
            ).scalar_one(),
            "sms": s.execute(
                select(func.count())
                .select_from(OutboundMessage)
                .where(OutboundMessage.channel == "sms", OutboundMessage.status == "queued")
            ).scalar_one(),
            "sms_sample": sample or "",
        }
        if imp is not None:
            result["import"] = {
                "status": str(imp.status),
                "total": imp.total_rows,
                "valid": imp.valid_rows,
                "errors": imp.error_rows,
                "imported": imp.imported_rows,
            }
        return result
