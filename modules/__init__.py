"""sweetspot data layer: the spec, the run directory, import, combining, the recorder, the demo models."""

__version__ = "0.1.0"
