"""`rxvision export`: write an ONNX (optionally int8) model directory and check its parity."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..deploy.export import DEFAULT_FLOAT_CONVS
    from ..identify.bundled import add_model_argument

    p = sub.add_parser("export", help="export a trained model to ONNX (fp32 or int8)")
    add_model_argument(p, "a PyTorch artifact (model.safetensors + card.json)")
    p.add_argument("--format", dest="fmt", default="onnx", choices=["onnx"],
                   help="export format (default: onnx)")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantisation (QDQ, per-channel); needs --calibration")
    p.add_argument("--calibration", metavar="DATASET",
                   help="real photos for int8 calibration (manifest CSV or class folders)")
    p.add_argument("--parity-data", metavar="DATASET",
                   help="real photos for the PyTorch parity check (default: --calibration)")
    p.add_argument("--num-calibration", type=int, default=128, metavar="N",
                   help="calibration images (default: 128)")
    p.add_argument("--num-parity", type=int, default=32, metavar="N",
                   help="parity-check images (default: 32)")
    p.add_argument("--float-convs", type=int, default=DEFAULT_FLOAT_CONVS, metavar="N",
                   help=f"int8: leading convolutions kept in float (default "
                        f"{DEFAULT_FLOAT_CONVS}; they cost the most accuracy when quantised, "
                        "see docs/benchmarks.md)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder for model.onnx and card.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import export_artifact
    from ..identify.bundled import resolve_model_path

    model_dir = resolve_model_path(args.model)
    report = export_artifact(
        model_dir, args.out, fmt=args.fmt, int8=args.int8, calibration=args.calibration,
        parity_data=args.parity_data, num_calibration=args.num_calibration,
        num_parity=args.num_parity, opset=args.opset, float_convs=args.float_convs,
    )
    kind = "int8 QDQ" if report.int8 else "fp32"
    print(f"exported {model_dir} -> {report.path} ({kind}, opset {report.opset}, "
          f"{report.size_mb:.1f} MB)")
    print(f"parity fp32 ONNX vs PyTorch on {report.parity_images} images: "
          f"max |logit diff| {report.max_abs_logit_diff:.2e}, "
          f"top-1 agreement {100 * report.top1_agreement:.1f}%")
    if report.int8:
        note = (f", {report.parity_images_in_calibration} of them also calibration images"
                if report.parity_images_in_calibration else ", none used for calibration")
        print(f"int8 ONNX vs PyTorch fp32 on {report.parity_images} images{note}: "
              f"max |logit diff| {report.int8_max_abs_logit_diff:.3f}, "
              f"top-1 agreement {100 * report.int8_top1_agreement:.1f}% "
              f"(calibrated on {report.calibration_images} images)")
    return 0
