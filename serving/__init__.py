"""Server-side code shared by the Triton Python models, the exporter and the launcher.

Triton's Python-backend models (`model_repository/*/1/model.py`) import from here, so the
server is started with the project root on `PYTHONPATH` (see `serving.server`).
"""
