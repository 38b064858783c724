"""Taking a stored certificate to where it is served: the deploy hook (and, later, deploy targets)."""
