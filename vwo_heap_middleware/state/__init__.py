"""State kept on disk (``Config.state_dir``) and in Redis across processes: the impression
journal (``journal.py``) and last-known-good settings (``kept_settings.py``)."""
