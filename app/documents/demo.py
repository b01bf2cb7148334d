"""Demo documents for `flask oblako demo`: a discharge summary (PDF) and an ECG (PNG).

They are generated here and stored through the same path as a patient's upload.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from app.documents.upload import store_document
from models import DocumentType, MedicalDocument, Patient

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _demo_pdf(patient: Patient) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    if DEJAVU.exists():
        pdf.add_font("DejaVu", fname=str(DEJAVU))
        pdf.set_font("DejaVu", size=14)
        lines = [
            "Выписной эпикриз (демонстрационный документ)",
            f"Пациент: {patient.full_name}",
            f"Дата рождения: {patient.birth_date:%d.%m.%Y}",
            "Находился на лечении в кардиологическом отделении.",
            "Рекомендовано: наблюдение кардиолога, контроль АД, ЭКГ через 3 месяца.",
        ]
    else:  # no Cyrillic font installed: a plain ASCII document still shows the flow
        pdf.set_font("Helvetica", size=14)
        lines = ["Discharge summary (demo document)", "Patient: demo patient"]
    for line in lines:
        pdf.multi_cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _demo_ecg_png() -> bytes:
    from PIL import Image, ImageDraw

    width, height = 800, 240
    image = Image.new("RGB", (width, height), (255, 245, 245))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 10):
        draw.line([(x, 0), (x, height)], fill=(255, 205, 205) if x % 50 else (240, 150, 150))
    for y in range(0, height, 10):
        draw.line([(0, y), (width, y)], fill=(255, 205, 205) if y % 50 else (240, 150, 150))
    baseline, points = height // 2, []
    for x in range(width):
        phase = (x % 160) / 160
        y = 6 * math.sin(2 * math.pi * phase)  # P and T waves, roughly
        if 0.40 < phase < 0.43:
            y -= 10
        elif 0.43 <= phase < 0.47:
            y += 80  # the R spike
        elif 0.47 <= phase < 0.50:
            y -= 20
        points.append((x, baseline - y))
    draw.line(points, fill=(20, 20, 20), width=2)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def store_demo_documents(patient: Patient, types: dict[str, DocumentType]) -> list[MedicalDocument]:
    """A discharge summary (PDF) and an ECG (PNG) through the same path as an upload."""
    other = types.get("other")
    return [
        store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(_demo_pdf(patient)),
            filename="Выписка из стационара.pdf",
            document_type=types.get("discharge", other),
            note="Демонстрационный документ",
        ),
        store_document(
            patient,
            by=patient.user,
            stream=io.BytesIO(_demo_ecg_png()),
            filename="ЭКГ.png",
            document_type=types.get("ecg", other),
            note="Демонстрационный документ",
        ),
    ]
