"""A finished multirun: its jobs read back from the sweep dir, the report (tables, charts, HTML page), the Hydra callback."""
