"""checkov loads external Python checks only from a folder with this file."""
