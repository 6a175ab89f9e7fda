"""The default recipe: the one place in the core that names components.

``genkit train`` with no ``--model``/``--data``/``--conditioner``/``--loss`` trains this recipe,
and ``genkit evaluate`` judges with this classifier. Everything else in ``genkit/`` treats every
component alike, bundled or third-party, so changing the default means changing this constant
and nothing else. Check it with::

    grep -rnE "[\\"'](shapes|folder|celeba|cub|tiled-onehot|cvae|beta-elbo|gaussian-elbo|small-cnn)[\\"']" genkit/

which finds this file only.

The default loss is ``gaussian-elbo`` (a calibrated decoder, σ learned) with ``cvae``'s learned
prior: on ``shapes`` it beats the paper's ``beta-elbo`` (β = 0.75, N(0, I)) on attribute
accuracy, fd and cll at the same budget (docs/evaluation.md, "Recipes compared"). The paper's
exact recipe is ``--loss beta-elbo --beta 0.75 --prior standard``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """The components a run uses when the user names none, and the options the recipe gives them.

    ``options`` maps a kind (``"model"``, ``"loss"``, ...) to options for the recipe's own
    component of that kind; they apply whenever that component is used (named or by default),
    under the user's own options. Options live in the recipe, not in the plugin's defaults, so a
    config written before a default changed still rebuilds what it was trained with.
    """

    dataset: str
    conditioner: str
    model: str
    loss: str
    classifier: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options_for(self, kind: str, name: str) -> dict[str, Any]:
        """The recipe's options for component ``name`` of ``kind``: none unless it is the recipe's own."""
        return dict(self.options.get(kind, {})) if getattr(self, kind) == name else {}


DEFAULT_RECIPE = Recipe(dataset="shapes", conditioner="tiled-onehot", model="cvae", loss="gaussian-elbo",
                        classifier="small-cnn", options={"model": {"prior": "learned"}})
