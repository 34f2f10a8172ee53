"""What readers look at: tables and pictures, at the edge of the package.

Everything a notebook or a page *shows* lives here: :mod:`.tables` (tokens as
Markdown tables) and :mod:`.plots` (matplotlib figures). The algorithms
(:mod:`llmsforme.decoding`, :mod:`llmsforme.processors`, :mod:`llmsforme.chat`)
never import this package; it imports them.

Example:
    >>> from llmsforme.display import token_table
    >>> print(repr(token_table([{"token": " plain", "probability": 0.5}], ["token", "probability"])))
    token   probability
    ␣plain        0.500

Taught in: [Top-k and top-p sampling](../part-1/top-k-top-p.ipynb),
[Temperature](../part-1/temperature.ipynb).
"""

from .plots import plot_batch_timeline, plot_beam_tree, plot_image_grid, plot_next_token_probabilities, plot_temperatures
from .tables import TokenTable, token_table

__all__ = [
    "TokenTable",
    "plot_batch_timeline",
    "plot_beam_tree",
    "plot_image_grid",
    "plot_next_token_probabilities",
    "plot_temperatures",
    "token_table",
]
