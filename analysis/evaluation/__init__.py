"""Evaluate a combined model against baselines on validation and held-out test splits (phase 4.1)."""
