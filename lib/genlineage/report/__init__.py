"""Figures and tables of the notebooks: one place for how results are drawn and saved."""
