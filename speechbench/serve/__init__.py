"""Part 3 as a service: a WebSocket streaming endpoint and an HTTP transcription API over the
continuous-batching engine, with Prometheus metrics (``app.py``), its launcher with graceful shutdown
(``server.py``) and a network load generator of real WebSocket clients (``netload.py``)."""
