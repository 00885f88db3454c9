"""streamer: a Kafka consumer-group worker that scores Avro events with a TensorFlow model."""

__version__ = "0.1.0"
