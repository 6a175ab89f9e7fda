"""Loss ``flow-matching``: the conditional flow-matching objective of a rectified flow.

The squared error between the velocity the model predicts and the path's velocity, per value
(averaged over pixels and channels, then over the batch), so its scale does not depend on the
image size: a model that predicts 0 scores about 1 + Var(x₁) ≈ 1.3 on ``shapes`` (pixels in
[−1, 1]), one that has learned the flow scores far less, never 0 (the noise leaves each point
of a path ambiguous). Term: ``mse`` (the same figure; genkit logs it per epoch beside ``loss``).

With ``adaptive`` p > 0 each image's mean squared error e (per value, so the floor does not depend
on the image size) is weighted by sg(1 / (e + 10⁻³)^p) (after MeanFlow's adaptive weighting, Geng et
al. 2025, which weighs the summed error): the loss then grows like e^(1−p), so a few images whose target
runs away (an average-velocity target is built from the network's own derivative) cannot swamp
the update; p = 1 is MeanFlow's choice for average velocities, 0 (the default) plain flow matching.

It reads the model output's ``velocity`` and ``target`` (``flow``'s ``FlowOutput``); an output
without them (a CVAE's) raises the ``AttributeError`` naming the missing field, which genkit's
planning turns into a one-line refusal of the pairing.
"""

from __future__ import annotations

import torch

import genkit


#: keeps the adaptive weight finite where an image's error is zero
ADAPTIVE_FLOOR = 1e-3


class FlowMatching:
    """mean((v_pred − (x₁ − x₀))²) over values and images, each image's error weighted when ``adaptive`` > 0."""

    def __init__(self, adaptive: float = 0.0):
        self.adaptive = float(adaptive)

    def __call__(self, output, images: torch.Tensor) -> genkit.LossResult:
        error = (output.velocity.float() - output.target.float()).pow(2).flatten(1).mean(dim=1)
        mse = error.mean()
        if not self.adaptive:
            return genkit.LossResult(total=mse, terms={"mse": mse.detach()})
        weight = (error.detach() + ADAPTIVE_FLOOR).pow(-self.adaptive)
        return genkit.LossResult(total=(weight * error).mean(), terms={"mse": mse.detach()})


def build(adaptive: float = 0.0) -> FlowMatching:
    """Flow matching: squared error of the predicted velocity, per value.

    :param adaptive: weight each image's error e by 1 / (e + 0.001)^adaptive, 0 to 2 (MeanFlow's
        adaptive weighting; 1 for --model-opt mean_flow, 0: plain mean squared error).
    """
    if isinstance(adaptive, bool) or not isinstance(adaptive, (int, float)) or not 0 <= adaptive <= 2:
        raise genkit.UsageError(f"adaptive {genkit.shown(adaptive)} must be a number from 0 to 2 (the power of "
                                "the per-image weight; 0: plain flow matching), for example --loss-opt adaptive=1")
    return FlowMatching(adaptive)


@genkit.hookimpl
def register_losses(register):
    register("flow-matching", build)
