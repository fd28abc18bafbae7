"""Calibration to a search and automatic runs that apply it."""
