"""simvault."""
