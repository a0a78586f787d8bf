"""sparse-vp: the hidden cost of model compression, as a notebook lab."""
