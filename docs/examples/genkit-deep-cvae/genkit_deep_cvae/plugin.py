"""The plugin: the module named by the ``genkit`` entry point. It only registers factories."""

import genkit
from genkit_deep_cvae.loss import build_loss
from genkit_deep_cvae.model import build_model


@genkit.hookimpl
def register_models(register):
    # trained with its own Bernoulli ELBO when no --loss is given
    register("deep-cvae", build_model, flags=("latent_dim",), default_loss="bernoulli-elbo")


@genkit.hookimpl
def register_losses(register):
    register("bernoulli-elbo", build_loss, flags=("beta",))
