"""The HTTP API (see main.py)."""

# Every versioned route lives under this path; route modules declare paths relative to it.
API_PREFIX = "/api/v1"
