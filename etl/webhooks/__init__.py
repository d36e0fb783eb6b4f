"""The webhook receiver behind ``etl serve``: signed OpenPhone deliveries in, queue updates out.

* :mod:`.signatures` verifies both signature schemes (pure, no I/O);
* :mod:`.events` reads what a delivery is about, legacy or dated envelope (pure);
* :mod:`.intake` stores a verified delivery and updates the queue in one transaction;
* :mod:`.worker` runs the sync engine in-process, woken by each stored delivery;
* :mod:`.metrics` holds the Prometheus metrics; :mod:`.app` the Starlette app;
  :mod:`.server` puts them together on uvicorn;
* :mod:`.manage` backs ``etl webhooks register|list|delete|migrate``.
"""
