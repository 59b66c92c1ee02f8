"""`python -m training serve`'s server around a fake model, for the tests of what does not depend on
the model (load shedding, a dying worker): training.serve.serve as it is, its TaggerAPI's setup and
predict replaced. The model "loads" at once and writes the worker's pid to $FAKE_SERVE_PID_FILE; each
batch takes $FAKE_SERVE_SECONDS and answers every photo 200 {"detail": "<its name>"}.

    python tests/fake_serve.py PORT [--timeout S] [--max-batch-size N] [--batch-timeout S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import serve as served  # noqa: E402


class FakeModelAPI(served.TaggerAPI):
    def setup(self, device: str) -> None:
        Path(os.environ["FAKE_SERVE_PID_FILE"]).write_text(str(os.getpid()))

    def predict(self, requests: list, context: list[dict]) -> list[served.Refusal]:
        started = time.perf_counter()
        time.sleep(float(os.environ["FAKE_SERVE_SECONDS"]))
        for request_context in context:
            request_context.update(batch_size=len(requests), batch_seconds=time.perf_counter() - started)
        return [served.Refusal(200, request.upload.name) if isinstance(request, served.Photo) else request
                for request in requests]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args()
    served.TaggerAPI = FakeModelAPI  # what build_server builds
    return served.serve(served.ServeSettings(
        run_id="fake", run_folder="fake", port=args.port, device="cpu", timeout=args.timeout,
        max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout))


if __name__ == "__main__":
    sys.exit(main())
