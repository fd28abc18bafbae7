"""Import of other checkpoint layouts into a run directory, without unpickling code."""
