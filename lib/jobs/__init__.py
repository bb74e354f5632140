"""Jobs: what one `python -m lib <command>` runs, from a profile to its results file."""
