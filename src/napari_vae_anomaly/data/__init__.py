"""Sample and benchmark data: the procedural brain phantom and data-set layouts."""
