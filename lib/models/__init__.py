"""Model parts: frozen image encoder, projector, language model (+LoRA), the VLM joining them. No parallelism here."""


class ModelUnavailable(RuntimeError):
    """A model could not be loaded (no network, missing local folder); the message names the way out."""
