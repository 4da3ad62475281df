"""Training: one fit loop of plain functions over a saveable state; stages differ only in their
objective. Import the pieces from their modules (``zmaj_lm.training.loop`` etc.)."""
