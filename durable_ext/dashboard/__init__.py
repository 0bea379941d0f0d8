"""The dashboard: a browser UI over every orchestration and entity of one or more task hubs.

:func:`~durable_ext.dashboard.api.dashboard_routes` serves the page (``static/``) and its JSON API
under ``/dashboard``; ``start`` mounts it next to the management API, and the ``dashboard`` command
(:mod:`durable_ext.dashboard.command`) serves it alone. docs/dashboard.md describes the API.
"""
