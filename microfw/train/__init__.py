"""Training: the fit loop against a small model protocol, callbacks and metrics."""
