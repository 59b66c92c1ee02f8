"""Download the Kaggle Fashion Product Images dataset with kagglehub and the user's Kaggle
credentials (~/.kaggle/kaggle.json, or KAGGLE_USERNAME / KAGGLE_KEY)."""

from __future__ import annotations

from pathlib import Path

from core.data import CatalogueError
from core.data.catalogue import resolve_dataset_dir

# variant -> Kaggle handle. "full": 44k photos at 1800x2400 (~25 GB); "small": the same
# catalogue with low-resolution photos (under 1 GB).
KAGGLE_DATASETS = {
    "full": "paramaggarwal/fashion-product-images-dataset",
    "small": "paramaggarwal/fashion-product-images-small",
}


def download_kaggle(dest: Path, variant: str = "small") -> Path:
    """Download and extract `variant` into `dest`; return the dataset folder in it
    (the one holding styles.csv and images/, see resolve_dataset_dir)."""
    if variant not in KAGGLE_DATASETS:
        raise CatalogueError(f"unknown variant {variant!r}; valid: {', '.join(KAGGLE_DATASETS)}")
    import kagglehub  # here, not at the top: only this command needs it
    from kagglehub import exceptions as kaggle_errors

    handle = KAGGLE_DATASETS[variant]
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise CatalogueError(f"{dest} is not a folder")
    try:
        downloaded = kagglehub.dataset_download(handle, output_dir=str(dest))
    except FileExistsError:  # kagglehub will not write into a folder that holds other files
        raise CatalogueError(
            f"{dest} is not empty and holds no finished download of {handle}: choose a new or empty folder"
        ) from None
    # OSError covers requests' connection and HTTP errors (no network, 401/403, 404).
    except (
        OSError,
        kaggle_errors.CredentialError,
        kaggle_errors.UnauthenticatedError,
        kaggle_errors.NotFoundError,
        kaggle_errors.BackendError,
        kaggle_errors.DataCorruptionError,
        kaggle_errors.KaggleEnvironmentError,
    ) as err:
        raise CatalogueError(
            f"could not download {handle} from Kaggle ({type(err).__name__}: {err}). "
            "Check the network and your Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME "
            f"and KAGGLE_KEY), or download it by hand from https://www.kaggle.com/datasets/{handle}, "
            "unzip it, then run: python -m core.data inspect DIR"
        ) from None
    return resolve_dataset_dir(downloaded)
