"""Process groups and the wrappers that make the one training loop parallel (torchtitan's split: the
model code knows nothing of ranks; ``parallelize`` applies ``apply_ddp`` / ``apply_fsdp`` / the pipeline
cut / ``apply_layer_split`` from outside and tells the loop what it needs to know as a ``Parallelized``).
The only package that imports torch.distributed's wrappers."""
