"""Process groups and the wrappers that make the one training loop parallel (torchtitan's split: the
model code knows nothing of ranks; ``apply_ddp`` / ``apply_fsdp`` wrap it from outside).
The only package that imports torch.distributed's wrappers."""
