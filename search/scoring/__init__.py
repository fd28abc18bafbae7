"""Ray-free scoring of a selection: the resident-model scorer and the cut of validation."""
