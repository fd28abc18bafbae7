"""Combining weights: one epoch or an averaged window per group, soups, BatchNorm."""
