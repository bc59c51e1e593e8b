"""The report: tables, figures, and the verdicts computed from the stages' outputs."""
