"""Model parts: frozen image encoder, projector, language model (+LoRA), the VLM joining them. No parallelism here."""


class ModelUnavailable(RuntimeError):
    """A model could not be loaded (no network, missing local folder); the message names the way out."""


def pretrain_step(loss, opt, sched, losses: list, bar) -> None:
    """One optimiser step of the default's encoder / LM pre-training, logged to the bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    losses.append(loss.item())
    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.update()
