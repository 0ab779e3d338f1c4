"""The controller service: FastAPI app (app.py) over a Controller (controller.py).

auth.py      tokens, sessions, CSRF; the middleware every request passes
uploads.py   streamed multipart uploads under the size limit, safe names
jobs.py      jobs of the API: created from uploads, shown as seed 001's JSON
api.py       /api: uploads, jobs, batches        streams.py  SSE and job histories
runtime.py   /api/runtime, /health, /metrics, /api/session
openai_api.py  OpenAI-compatible /v1/audio/*     metrics.py  Prometheus
ui.py        the web UI's pages (docs/ui.md)
"""
