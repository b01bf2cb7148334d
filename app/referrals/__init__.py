"""Pathway 3: the treating physicians' table → patients' accounts, referral consultations, SMS.

The manager downloads the template (`template`), the regional specialists fill it, the manager
uploads it. `upload` reads the file safely (refusing what is not a safe spreadsheet) and
`validation.validate_upload` checks every row in chunks and stores a preview (ReferralImport
`validated`, one ReferralImportRow per row with its normalised data and its errors). Nothing else
is written until the manager confirms (`importer.start_import`); then `importer.run_import` (a
Huey task, app/tasks.py) imports the valid rows in chunks, one commit per chunk, skipping rows
already done — so an interrupted import resumes without duplicates, and `recovery` resumes an
import whose worker died. `invitations` holds what patients are told; `tracking` what the
manager follows and exports.

Idempotence: a patient is matched by СНИЛС, else by phone + birth date, and linked, never
created twice (the phone is also unique in the database); a row's consultation is found by
`referral_row_id`, and an active referral consultation of the same patient for the same disease
is reused; the invitation SMS carries a dedupe key, and is only sent when an account is created.
A patient who already had an account gets no credentials but is told of a new referral
consultation (cabinet notification + SMS / e-mail through notify()), once per consultation.

Services never commit — except `run_import`, which is the background job's own unit of work.
"""
