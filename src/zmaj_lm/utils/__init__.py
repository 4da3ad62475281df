"""Small helpers shared by every layer: logging, seeding, atomic file writes."""
