"""The catalogue: Kaggle's Fashion Product Images layout (`styles.csv` + `images/<id>.jpg`).

`python -m core.data inspect|demo|download` is the command line over this package.
"""

# The seven label heads the model predicts, in the order the model's heads are built.
HEADS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")

# Columns of Kaggle's styles.csv, in file order. `year` and `productDisplayName` are
# optional in a user's file; `id` and every head are required.
STYLES_COLUMNS = (
    "id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
    "season", "year", "usage", "productDisplayName",
)
REQUIRED_COLUMNS = ("id", *HEADS)


class CatalogueError(ValueError):
    """A catalogue the user pointed at cannot be used; the message names the problem."""
