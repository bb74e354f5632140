"""The training loop, checkpoints, data order and step metrics; strategies wrap the model, not the loop."""
