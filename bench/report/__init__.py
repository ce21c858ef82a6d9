"""Figures and tables rebuilt from the tracking store alone (never from memory)."""

from bench.report.build import build_report, load_trials

__all__ = ["build_report", "load_trials"]
