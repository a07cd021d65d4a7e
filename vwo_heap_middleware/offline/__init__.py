"""Deciding with no network: the offline gateway (``gateway``), flags TOML and settings JSON
files (``flags_file``), and Heap segments files (``segments_file``)."""
