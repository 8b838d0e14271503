"""A finished multirun: its jobs read back from the sweep dir, the report (tables, charts, HTML page),
the Hydra callback, and the helper process that draws the charts."""
