import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DIR = SHARED_DATA / "fashion-sample"
EXTERNAL_DIR = SHARED_DATA / "external" / "clothing"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The real Kaggle sample (44,446 rows, 11,882 images), read in place."""
    if not (SAMPLE_DIR / "styles.csv").is_file():
        pytest.skip(f"real sample not present at {SAMPLE_DIR}")
    return SAMPLE_DIR
