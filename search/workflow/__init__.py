"""The pipeline over every step, its stage cache and its summary."""
