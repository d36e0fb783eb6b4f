"""The dlt side of ``bench/writepath.py``: v1 summaries per id, loaded the way a dlt user would load them.

Runs in a venv of its own with dlt installed (``bench/writepath.py`` makes it:
``.venv-dlt``, ``pip install 'dlt[postgres,sqlalchemy]' pymysql``), never in the
package's: dlt is no dependency of the job.  What it does, and nothing else:

* a resource yields the call ids of ``--ids`` (the file the job's ``etl enqueue`` reads);
* a transformer (``parallelized=True``: dlt's thread pool, ``--workers`` threads,
  as the job has ``--concurrency`` fetch threads) asks the simulator
  ``GET /v1/call-summaries/{id}`` through dlt's REST client
  (``dlt.sources.helpers.rest_client.RESTClient``, the key in the
  ``Authorization`` header) and yields the summary object (``data``);
* dlt normalises the nested summary into child tables as it does any nested
  JSON (``call_summaries`` with ``call_summaries__summary``,
  ``call_summaries__next_steps``, ``call_summaries__jobs``,
  ``call_summaries__jobs__result__data``) and loads them with
  ``write_disposition`` ``merge`` on ``callId`` (an upsert, children replaced:
  what the job does) or ``append`` (``--disposition``);
* destination: dlt's ``postgres`` destination for PostgreSQL, its
  ``sqlalchemy`` destination for SQLite and MariaDB.

It prints one JSON line: rows loaded into the parent table, and dlt's own step timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--ids", required=True, help="a file of call ids, one a line")
    p.add_argument("--database-url", required=True, help="SQLAlchemy URL of the destination database")
    p.add_argument("--dataset", required=True, help="dataset (PostgreSQL schema; MariaDB: the database itself)")
    p.add_argument("--workers", type=int, default=8, help="dlt's extract thread pool (the job's concurrency)")
    p.add_argument("--disposition", choices=("merge", "append"), default="merge")
    args = p.parse_args()

    # No telemetry call to dlt's servers; state and load packages in a throwaway directory.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ["EXTRACT__WORKERS"] = str(args.workers)
    os.environ["EXTRACT__MAX_PARALLEL_ITEMS"] = str(max(20, args.workers * 4))

    import dlt
    from dlt.sources.helpers.rest_client import RESTClient

    with open(args.ids, encoding="ascii") as f:
        ids = [line.strip() for line in f if line.strip()]

    client = RESTClient(base_url=args.base_url, headers={"Authorization": args.api_key})

    @dlt.resource(selected=False)
    def call_ids() -> Any:
        yield from ids

    @dlt.transformer(data_from=call_ids, name="call_summaries", parallelized=True, primary_key="callId",
                     write_disposition=args.disposition)
    def call_summaries(call_id: str) -> Any:
        yield client.get(f"/v1/call-summaries/{call_id}").json()["data"]

    url = args.database_url
    if url.startswith("postgresql"):
        from urllib.parse import urlsplit

        parts = urlsplit(url.replace("+psycopg", ""))
        if parts.password is None and parts.username:
            # dlt's postgres credentials require a password field; a server that trusts local
            # connections (the benchmark's) ignores it.
            parts = parts._replace(netloc=f"{parts.username}:unused@{parts.netloc.split('@', 1)[1]}")
        destination: Any = dlt.destinations.postgres(credentials=parts.geturl())
    else:
        destination = dlt.destinations.sqlalchemy(credentials=url)
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as tmp:
        pipeline = dlt.pipeline(pipeline_name="writepath", pipelines_dir=tmp, destination=destination,
                                dataset_name=args.dataset)
        started = time.perf_counter()
        pipeline.extract(call_summaries)
        extracted = time.perf_counter()
        pipeline.normalize()
        normalized = time.perf_counter()
        info = pipeline.load()
        loaded = time.perf_counter()
        info.raise_on_failed_jobs()
        with pipeline.sql_client() as sql:
            rows = sql.execute_sql(f"SELECT COUNT(*) FROM {sql.make_qualified_table_name('call_summaries')}")
    print(json.dumps({"rows": int(rows[0][0]), "extract_s": round(extracted - started, 3),
                      "normalize_s": round(normalized - extracted, 3), "load_s": round(loaded - normalized, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
