"""StreamPulse REST + WebSocket API (FastAPI). Entry point: `uvicorn api.main:app` or `python -m api`."""
