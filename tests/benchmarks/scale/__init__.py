"""``make bench-scale``: 100,000 users over a week of simulated time, through the real use cases.

A discrete-event simulation (:mod:`.loop`): the use cases of ``logic/`` run on the in-memory fakes of
``tests/unit/fakes.py`` (counted, indexed where 100,000 records need it: :mod:`.aws`), against a model of
TikTok (:mod:`.tiktok`: preparation times, webhooks, the per-endpoint quota over a sliding minute,
outages, rotating tokens), driven the way the template's Lambda functions drive them (:mod:`.functions`:
queues with their delays, batch sizes and concurrency, the sweeper's schedule). :mod:`.simulator` builds
and runs one scenario; :mod:`.report` turns the runs into tables, costs and a plot in docs/benchmarks.md.
"""
