"""Plain helpers below every other package: safe file I/O, state dicts, the run-folder layout, schedules."""
