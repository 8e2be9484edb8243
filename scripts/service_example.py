"""Print the service's answer for one photo, as docs/service.md shows it.

Runs the app in-process with FastAPI's TestClient (bundled model unless --model), sends the
photo twice and prints the second answer (the first carries the warm-up), then the model
settings that decided it (GET /v1/model).

    python scripts/service_example.py [--photo data/sample/images/00093-0900-01.jpg]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastapi.testclient import TestClient

from rxvision.serve import ServeSettings, create_app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", type=Path, default=Path("data/sample/images/00093-0900-01.jpg"))
    p.add_argument("--model", type=Path, help="artifact (default: the bundled model)")
    p.add_argument("--topk", type=int, default=3)
    args = p.parse_args()
    with TestClient(create_app(ServeSettings(model=args.model))) as client:
        for _ in range(2):
            resp = client.post("/v1/identify", data={"topk": str(args.topk)},
                               files=[("image", (args.photo.name, args.photo.read_bytes(),
                                                 "image/jpeg"))])
        resp.raise_for_status()
        print(json.dumps(resp.json(), indent=1))
        info = client.get("/v1/model").json()
        print(json.dumps({k: info[k] for k in ("zoom", "tta", "temperature", "identification")}))


if __name__ == "__main__":
    main()
