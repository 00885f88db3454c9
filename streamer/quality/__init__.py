"""Model quality from delayed labels: did the scores the worker gave turn out right?

One module per job, imported by what needs it (this file imports nothing, so
`streamer.settings` loading `streamer.quality.settings` pulls in nothing else):

- `settings`: the `quality:` section (a pydantic leaf); absent, the worker keeps no scores;
- `scores`: the worker's side, each event's score kept in Redis for the label horizon;
- `windows`: per event-time window and model version, score histograms per label and the
  confusion counts at the alert threshold; their merge and the figures from them;
- `records`: the quality-topic record (schemas/quality_window.avsc);
- `join`: `streamer quality run`, the companion consumer joining labels to scores;
- `report`: the quality section of the drift report.
"""
