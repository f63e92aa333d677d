"""Is the encoder learning or collapsing: collapse metrics and the online kNN monitor."""

from openjepa.diagnostics.collapse import collapse_metrics, collapse_warnings
from openjepa.diagnostics.monitor import MonitorCallback, OnlineMonitor

__all__ = ["MonitorCallback", "OnlineMonitor", "collapse_metrics", "collapse_warnings"]
