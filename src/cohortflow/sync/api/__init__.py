"""The sync service's REST API (``/api/v1``), shaped after Hightouch's public API."""
