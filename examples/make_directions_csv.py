"""Write an Opinion-QA CSV whose answers carry bracketed stage directions: a stand-in for a user's own
data, for ``interp run --data examples/opinion_qa_directions.csv --study personality --behavior
'regex:...'``.

The shipped answers with 1-3 directions from each trait's palette (``training.injection``) injected
after sentence ends, with injection seed 1 (the built-in ``directions`` study uses seed 0, so these
are other placements and other directions). Deterministic: running it again writes the same file.
Run: .venv/bin/python examples/make_directions_csv.py [OUT]
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from activations.atomic_io import write_text_atomic
from training.data import COLUMNS, load_opinion_qa
from training.injection import inject_rows

SEED = 1


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("opinion_qa_directions.csv"))
    rows = inject_rows(load_opinion_qa(), seed=SEED, marker="directions")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS.values()), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: getattr(row, field) for field, column in COLUMNS.items()})
    write_text_atomic(out, buffer.getvalue())
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main()
