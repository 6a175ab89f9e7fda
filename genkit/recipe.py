"""The default recipe: the one place in the core that names components.

``genkit train`` with no ``--model``/``--data``/``--conditioner``/``--loss`` trains this recipe,
and ``genkit evaluate`` judges with this classifier. Everything else in ``genkit/`` treats every
component alike, bundled or third-party, so changing the default means changing this constant
and nothing else. Check it with::

    grep -rnE "\\"(shapes|tiled-onehot|cvae|beta-elbo|gaussian-elbo|small-cnn)\\"" genkit/

which finds this file only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """The components a run uses when the user names none."""

    dataset: str
    conditioner: str
    model: str
    loss: str
    classifier: str


DEFAULT_RECIPE = Recipe(dataset="shapes", conditioner="tiled-onehot", model="cvae", loss="beta-elbo",
                        classifier="small-cnn")
