"""A small ETL: extract orders, clean each one in parallel, load with retries, summarise.

Run it as a script (``python examples/etl.py``) or through the CLI
(``auto-workflow run examples/etl.py:etl --params '{"day": "2026-11-28"}'``).

* ``extract`` reads a CSV (generated here so the example needs nothing else);
* ``fan_out(clean, rows)`` expands at run time into one ``clean`` task per row;
* ``load`` writes the cleaned rows to a SQLite database and is retried with backoff
  (it simulates a database that refuses the first connection);
* ``summarise`` runs after ``load`` and reports what was loaded.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from auto_workflow import fan_out, flow, get_context, task

_FAILED_ONCE: set[str] = set()


def _sample_csv(rows: int, seed: int) -> str:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["order_id", "customer", "amount", "currency"])
    for i in range(rows):
        amount = f"{rng.uniform(-5, 250):.2f}" if i % 17 else "n/a"
        writer.writerow([i, f" Customer {rng.randint(1, 9)} ", amount, rng.choice(["eur", "USD"])])
    return out.getvalue()


@task
def extract(rows: int = 50) -> list[dict[str, str]]:
    """Read the day's orders (a generated CSV)."""
    text = _sample_csv(rows, seed=rows)
    return list(csv.DictReader(io.StringIO(text)))


@task
def clean(row: dict[str, str]) -> dict[str, Any] | None:
    """Normalise one order; drop it (None) if its amount is unusable."""
    try:
        amount = float(row["amount"])
    except ValueError:
        return None
    if amount <= 0:
        return None
    return {
        "order_id": int(row["order_id"]),
        "customer": row["customer"].strip().lower(),
        "amount": round(amount, 2),
        "currency": row["currency"].upper(),
    }


@task(retries=3, retry_backoff=0.2, retry_jitter=0.1, run_in="thread")
def load(rows: list[dict[str, Any] | None], database: str) -> int:
    """Insert the valid rows; the first attempt fails like a busy database would."""
    ctx = get_context()
    if database not in _FAILED_ONCE:
        _FAILED_ONCE.add(database)
        raise ConnectionError("database is busy, try again")
    valid = [r for r in rows if r is not None]
    with sqlite3.connect(database) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders "
            "(order_id INTEGER PRIMARY KEY, customer TEXT, amount REAL, currency TEXT)"
        )
        conn.executemany(
            "INSERT OR REPLACE INTO orders VALUES (:order_id, :customer, :amount, :currency)",
            valid,
        )
    conn.close()
    ctx.logger.info("loaded %d rows on attempt %d", len(valid), ctx.attempt)
    return len(valid)


@task
def summarise(loaded: int, database: str, scratch: bool = False) -> dict[str, Any]:
    """Totals per currency, read back from the database (removed after if it was scratch)."""
    with sqlite3.connect(database) as conn:
        per_currency = dict(
            conn.execute("SELECT currency, ROUND(SUM(amount), 2) FROM orders GROUP BY currency")
        )
    conn.close()
    if scratch:
        Path(database).unlink(missing_ok=True)
    return {"loaded": loaded, "per_currency": per_currency}


@flow
def etl(rows: int = 50, database: str | None = None) -> dict[str, Any]:
    """Extract -> clean every row (dynamic fan-out) -> load (retried) -> summarise."""
    scratch = database is None  # a database of its own, removed once summarised
    if database is None:
        database = str(Path(tempfile.gettempdir()) / f"aw_etl_{get_context().run_id}.db")
    cleaned = fan_out(clean, extract(rows))
    loaded = load(cleaned, database)
    return summarise(loaded, database, scratch)


if __name__ == "__main__":
    import json

    print(json.dumps(etl.run(), indent=2))
