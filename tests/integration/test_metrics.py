"""/metrics, /healthz and /readyz scraped over HTTP while a worker runs against the real stack."""

import threading
import time

from streamer.worker import Worker
from tests.integration.conftest import SettingsFactory, get, produce_payments, samples, value

EVENTS = 3000


def test_scraped_counters_match_and_lag_drains_to_zero(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    worker = Worker(settings)
    seen: dict[str, object] = {"readiness": []}

    def observe() -> None:
        while worker.health is None:
            time.sleep(0.01)
        port = worker.health.port
        seen["healthz"] = get(port, "/healthz")[0]
        while True:  # readiness from start-up until it turns true
            status = get(port, "/readyz")
            seen["readiness"].append(status)  # type: ignore[attr-defined]
            if status[0] == 200:
                break
            time.sleep(0.02)
        produce_payments(settings, EVENTS, seed=3)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            scraped = samples(port)
            lags = [v for (n, _), v in scraped.items() if n == "streamer_consumer_lag"]
            # each partition's lag arrives with the statistics after its first commit, a second apart
            every = len(lags) == settings.topics.partitions
            if value(scraped, "streamer_events_scored_total") == EVENTS and every and max(lags) == 0:
                seen["final"] = scraped
                break
            time.sleep(0.25)
        worker.stop()

    scraper = threading.Thread(target=observe)
    scraper.start()
    worker.run(timeout_s=150)
    scraper.join()

    assert seen["healthz"] == 200
    readiness = seen["readiness"]
    assert readiness[0][0] == 503 and readiness[-1][0] == 200  # type: ignore[index]
    assert "ready: partitions [0, 1, 2, 3]" in readiness[-1][1]  # type: ignore[index]
    final = seen.get("final")
    assert final, "counters never matched the events sent, or lag never drained to 0"
    assert isinstance(final, dict)
    assert value(final, "streamer_events_consumed_total") == EVENTS
    assert value(final, "streamer_events_scored_total") == EVENTS
    assert value(final, "streamer_batch_size_sum") == EVENTS
    assert value(final, "streamer_end_to_end_seconds_count") == EVENTS
    lag = {labels: v for (name, labels), v in final.items() if name == "streamer_consumer_lag"}
    assert len(lag) == 4 and set(lag.values()) == {0.0}
    assert value(final, "streamer_stage_seconds_count") > 0
    info = (("device", "cpu"), ("name", "fraud"), ("role", "primary"), ("version", "1"))
    assert final[("streamer_model_info", info)] == 1
