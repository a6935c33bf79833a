"""Report helpers below every job: text (percentages, strict JSON, CSV, report lines), figures
(Agg canvas, atomic PNGs, confusion and per-class charts) and the run record."""
