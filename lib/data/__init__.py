"""PMC-OA data: the released JSONL format, the embedded generator, validation, subsets."""
