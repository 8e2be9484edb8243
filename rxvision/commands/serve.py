"""`rxvision serve`: the HTTP API and web page (FastAPI + uvicorn).

Examples:
    rxvision serve                                   # bundled model on 127.0.0.1:8000
    rxvision serve --model exports/c3pi --backend onnx --max-batch 16
    RXVISION_API_KEY=secret rxvision serve --host 0.0.0.0   # /v1 needs X-API-Key
"""

from __future__ import annotations

import argparse
import sys

from .options import add_head_precision_argument, add_tta_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..identify.bundled import add_model_argument
    from ..identify.identifier import BACKENDS
    from ..serve.settings import DEFAULT_API_KEY_ENV

    p = sub.add_parser("serve", help="serve the HTTP API and the web page",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p, "an ONNX export with --backend onnx")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="default torch")
    p.add_argument("--segmenter", metavar="DIR",
                   help="pill finder for a model trained on pill crops (default: the model's "
                        "own segmenter/)")
    p.add_argument("--max-pills", type=int, default=8,
                   help="most pills answered per photo by a crop model (default 8)")
    p.add_argument("--no-imprint", action="store_true",
                   help="do not read the pills' imprints (a crop model with a drug library "
                        "reads them by default, ~80 ms per pill)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: ORT's)")
    p.add_argument("--onnx-spinning", action="store_true",
                   help="let onnxruntime's idle threads busy-wait (off by default: they would "
                        "take the CPU that decoding and HTTP need)")
    p.add_argument("--torch-threads", type=int,
                   help="torch intra-op threads (default: 1 with --backend onnx, where torch "
                        "only normalises images and its threads would compete with "
                        "onnxruntime's; torch's default otherwise)")
    add_tta_argument(p)
    add_head_precision_argument(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--max-batch", type=int, default=16, help="images per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a forward pass waits to fill its batch (default 5)")
    p.add_argument("--queue-size", type=int, default=256,
                   help="requests allowed to wait for the model; more get 503 (default 256)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit")
    p.add_argument("--max-pixels", type=int, help="per image (default: the decoder's limit)")
    p.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV, metavar="VAR",
                   help=f"environment variable holding the API key (default "
                        f"{DEFAULT_API_KEY_ENV}); set and non-empty = X-API-Key required")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from ..artifact import read_card
    from ..identify.bundled import resolve_model_path
    from ..identify.identifier import IdentifierError
    from ..identify.tta import calibration_mismatch, resolve_rotations
    from ..serve import ServeSettings, create_app
    from ..serve.runtime import limit_malloc_arenas

    model = resolve_model_path(args.model)
    card = read_card(model)  # a wrong path fails here, in one line, not as a traceback
    fields = {"model": model, "backend": args.backend, "segmenter": args.segmenter,
              "max_pills": args.max_pills,
              "imprint": not args.no_imprint,
              "device": args.device, "threads": args.threads, "host": args.host,
              "torch_threads": args.torch_threads or (1 if args.backend == "onnx" else None),
              "onnx_spinning": args.onnx_spinning, "tta": args.tta,
              "head_precision": args.head_precision,
              "port": args.port, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
              "queue_size": args.queue_size, "max_body_bytes": int(args.max_body_mb * 2**20)}
    if args.max_pixels is not None:
        fields["max_pixels"] = args.max_pixels
    try:
        settings = ServeSettings.with_api_key_from_env(args.api_key_env, **fields)
    except ValidationError as exc:
        raise IdentifierError(f"invalid serve option: {exc}") from None
    if settings.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"rxvision serve: warning: listening on {args.host} without an API key "
              f"(set {args.api_key_env})", file=sys.stderr)
    mismatch = calibration_mismatch(card, resolve_rotations(card, args.tta))
    if mismatch:
        print(f"rxvision serve: note: {mismatch}", file=sys.stderr)
    limit_malloc_arenas()  # before the server's threads allocate; see serve/runtime.py
    # One worker process: the model and the micro-batcher live in it (more workers would
    # each load the model and split the batches).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=args.log_level, access_log=args.log_level == "debug")
    return 0
