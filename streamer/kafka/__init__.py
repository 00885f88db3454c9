"""Everything that touches librdkafka. Raw `Message` objects never leave this package."""
