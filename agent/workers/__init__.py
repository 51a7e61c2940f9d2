"""Background workers off the event path: hashing, telemetry sampling, scans."""
