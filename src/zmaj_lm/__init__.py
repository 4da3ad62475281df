"""zmaj-lm."""
