#!/usr/bin/env python3
"""Runs one query in DuckDB over an otel-audit store, through the views of
docs/duckdb/audit-views.sql (with 'audit-data' replaced by --store), and
writes its rows as JSON lines (DuckDB's own COPY ... FORMAT json) to --out.
The tests (tests/sql.rs) compare them with what `otel-audit sql` answers.
Exit status 0 on success, 1 when DuckDB refuses the views or the query.
"""

from __future__ import annotations

import argparse
import sys

import duckdb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", required=True, help="docs/duckdb/audit-views.sql")
    parser.add_argument("--store", required=True, help="the store directory")
    parser.add_argument("--query", required=True, help="one SELECT statement")
    parser.add_argument("--out", required=True, help="where the JSON lines go")
    args = parser.parse_args()

    with open(args.views, encoding="utf-8") as f:
        views = f.read().replace("'audit-data/", "'" + args.store.rstrip("/").replace("'", "''") + "/")
    query = args.query.strip().rstrip(";")
    out = args.out.replace("'", "''")
    con = duckdb.connect()
    try:
        con.execute(views)
        con.execute(f"COPY ({query}) TO '{out}' (FORMAT json)")
    except duckdb.Error as error:
        print(f"duckdb: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
