"""sweetspot data layer: spec, run directory, recorder, combining, demo model."""

__version__ = "0.1.0"
