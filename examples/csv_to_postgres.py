"""Load a CSV from object storage into Postgres with COPY, then query it back.

Needs two connector profiles (docs/connectors.md), e.g. in pyproject.toml::

    [tool.auto_workflow.connectors.warehouse]
    kind = "postgres"
    dsn = "secret://WAREHOUSE_DSN"        # the DSN itself in the WAREHOUSE_DSN variable

    [tool.auto_workflow.connectors.lake]
    kind = "fsspec"
    url = "abfs://landing/orders"          # with account_name / connection_string fields

or as environment variables (``AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__KIND=postgres``,
``AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__DSN=postgresql://...``). Without a ``lake`` profile
the example uses an in-memory one and writes a sample CSV into it; without a ``warehouse``
it says what to set and exits with status 2.

Run it as a script (``python examples/csv_to_postgres.py``) or through the CLI
(``auto-workflow run examples/csv_to_postgres.py:csv_to_postgres``). It prints a JSON
summary: rows loaded, and revenue per currency as Postgres computed it.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from auto_workflow import connectors, flow, task

SOURCE = "orders.csv"


def _sample_csv(rows: int) -> bytes:
    rng = random.Random(7)
    lines = ["order_id,customer,amount,currency"]
    lines += [
        f"{i},customer {rng.randint(1, 9)},{rng.uniform(1, 250):.2f},{rng.choice(['EUR', 'USD'])}"
        for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _lake() -> Any:
    if "lake" not in connectors.profiles():
        connectors.register_profile("lake", kind="fsspec", url="memory://example-lake")
    lake = connectors.get("lake")
    if not lake.exists(SOURCE):
        lake.upload(SOURCE, _sample_csv(1000))
    return lake


@task
def extract(name: str) -> bytes:
    """The CSV's bytes from object storage."""
    data: bytes = _lake().download(name)
    return data


@task(retries=2, retry_backoff=0.5)
def load(csv: bytes, table: str) -> int:
    """Replace ``table``'s rows with the CSV's, in one transaction (a retry starts over)."""
    pg = connectors.get("warehouse")
    with pg.transaction():
        pg.execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            "(order_id int PRIMARY KEY, customer text, amount numeric(10, 2), currency text)"
        )
        pg.execute(f"TRUNCATE {table}")
        loaded: int = pg.copy_from(table, csv, header=True)
    return loaded


@task
def summarise(loaded: int, table: str) -> dict[str, Any]:
    """What Postgres now holds: the row count and revenue per currency."""
    rows = connectors.get("warehouse").query(
        f"SELECT currency, sum(amount)::float AS revenue FROM {table} "
        "GROUP BY currency ORDER BY currency"
    )
    return {"loaded": loaded, "revenue": {r["currency"]: round(r["revenue"], 2) for r in rows}}


@flow
def csv_to_postgres(name: str = SOURCE, table: str = "orders") -> dict[str, Any]:
    """Object storage -> COPY into Postgres -> a query back."""
    if not table.isidentifier():  # it is written into SQL text below: a plain name only
        raise ValueError(f"table must be a plain identifier; got {table!r}")
    loaded = load(extract(name), table)
    return summarise(loaded, table)


def main() -> int:
    if "warehouse" not in connectors.profiles():
        print(
            "no 'warehouse' connector profile: set AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__KIND="
            "postgres and AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__DSN=postgresql://..., or add "
            "[tool.auto_workflow.connectors.warehouse] to pyproject.toml",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(csv_to_postgres.run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
