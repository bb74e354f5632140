"""Process groups and the wrappers that make the one training loop parallel (torchtitan's split: the
model code knows nothing of ranks; ``apply_ddp`` / ``apply_fsdp`` / ``apply_pipeline`` /
``apply_layer_split`` wrap or cut it from outside).
The only package that imports torch.distributed's wrappers."""
