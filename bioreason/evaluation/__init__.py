"""Scoring a model on a task's ID / OOD splits (`scoring`), the baselines every score is shown against (`baselines`),
the pipeline's report, and study-style sweeps (`study`, `study_report`)."""
