"""The spec (sweetspot.yaml): its schema, couplings, the spec a run stores, and selections."""
