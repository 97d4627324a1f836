"""`BioReasonDataError`: the one exception type for bad input data.

Its message is one line naming the file, the record (a line number or an id) and the problem, so the CLI can print it
without a traceback and a user can fix the file."""

from __future__ import annotations


class BioReasonDataError(ValueError):
    def __init__(self, file: str | None, record: str | int | None, problem: str):
        self.file, self.record, self.problem = file, record, problem
        where = [str(file) if file else "<data>"]
        if record is not None:
            where.append(f"line {record}" if isinstance(record, int) else f"record {record!r}")
        super().__init__(f"{': '.join(where)}: {problem}")
