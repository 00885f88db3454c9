"""Drift statistics: does live traffic still look like the training data?

One module per job, imported by what needs it (this file imports nothing, so
`streamer.settings` loading `streamer.drift.settings` does not pull numpy or matplotlib):

- `settings`: the `drift:` section, statuses and the cuts on each metric (a pydantic leaf);
- `histograms`: fixed bins of a column, training baseline and live windows alike;
- `windows`: per-worker tumbling windows of raw counts, and their merge across workers;
- `metrics`: the metric registry and `evaluate`, a window's verdict;
- `records`: the drift-topic record (schemas/drift_report.avsc);
- `report`: the analyst's HTML report; `command`: `streamer drift report`;
- `tap`: the worker's side tap, from scored batches to the drift topic and Prometheus.
"""
