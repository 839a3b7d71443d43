"""The model owner's tool: one suspect, one calibrated verdict (``genlineage verify``)."""
from .verdict import Verdict, select_keys, verify
from .report import summary_paragraph, write_report

__all__ = ["Verdict", "verify", "select_keys", "write_report", "summary_paragraph"]
