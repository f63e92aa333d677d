"""A pickle canary shared by the tests that check nothing gets unpickled."""

from pathlib import Path


class Canary:
    """Unpickling an instance writes a marker file, so a test can tell whether unpickling ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getstate__(self) -> dict:
        return {"marker": self.marker}

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("unpickled")
        self.marker = state["marker"]
