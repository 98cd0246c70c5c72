"""The whole study: its stages in order, the run folder, the report and the toy experiment."""
