"""Caption scoring (pycocoevalcap) and diversity."""
