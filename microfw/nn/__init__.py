"""Models: the parameter store, the planner that decides how a model's steps run, and
``Sequential``."""
