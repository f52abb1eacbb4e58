"""The long-running service: daemon lifecycle, scheduler, HTTP health and metrics, systemd."""
