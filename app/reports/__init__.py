"""Managers' reports («Отчёты»): the figures the service accounts for, their exports and the
dashboard. The Flask-Admin views (views/reports.py) import from the modules by responsibility:

  access         who may open the reports, who sees personal data in them
  labels         the reports' vocabulary: labels, titles, the statuses each report covers, and
                 how a consultation's number is printed (pages and exports)
  filters        parsing and validating a report's filters from the query string
  sql            shared SQL building blocks: durations, names, joins, the period, paging
  queries        the reports' figures and lists: consultations, doctor load, cancellations,
                 referral imports, outbox
  service_level  the service-level report: application → answer against the promise
  dashboard      the dashboard's weekly figures
  charts         the charts' geometry (the SVG is drawn by templates/reports/_charts.html)
  export_columns what each report exports: the headers, the statement, the row conversion
  exports        writing an export: CSV streamed, XLSX in a temporary file, the audit event

Every figure is an aggregate computed by the database (GROUP BY / CASE), every list a page
(LIMIT / OFFSET): a page sends the same few statements whatever the size of the tables.
"""
