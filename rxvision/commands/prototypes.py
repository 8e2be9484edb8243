"""`rxvision prototypes`: rebuild a cosine final layer's rows from the reference photos.

Each label's row becomes the mean embedding of its reference photo(s) rendered as
phone-style views, the same rule `rxvision enroll` uses for new pills, so pills enrolled
later compete with the trained ones on equal terms. The network is unchanged. The source
card's calibration and thresholds are dropped: run `rxvision calibrate` on the result. Its
pill finder and drug library come along (look-alikes recomputed for the new rows).

Example:
    rxvision prototypes --model runs/c3pi --data ../shared/data/c3pi-1k/manifest.csv \\
        --out runs/c3pi-proto
    rxvision calibrate --model runs/c3pi-proto --data calibration_views/manifest.csv --thresholds
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..identify.bundled import add_model_argument
    from .enroll import add_view_arguments

    p = sub.add_parser("prototypes", help="rebuild every class row from reference photos",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p, "a model with a cosine final layer; it is not modified")
    p.add_argument("--data", required=True, metavar="REFS",
                   help="manifest CSV or class folders with reference photos of exactly the "
                        "model's labels (e.g. its training data)")
    p.add_argument("--out", required=True, metavar="RUN2", help="directory for the new model")
    add_view_arguments(p, "enroll into the result with the same")
    p.set_defaults(func=prototypes)


def prototypes(args: argparse.Namespace) -> int:
    from ..identify.bundled import resolve_model_path
    from ..library.prototype_head import prototype_head_artifact

    record = prototype_head_artifact(resolve_model_path(args.model), args.data, args.out,
                                     args.views, args.seed, args.batch_size)
    library = (f"; drug library re-tied ({record['library']})" if record["library"]
               else "; the source has no drug library")
    print(f"rebuilt the rows of {record['references']} reference photo(s) "
          f"({args.views} synthetic views each) -> {args.out}{library}; now run "
          f"`rxvision calibrate --model {args.out} --data VIEWS --thresholds`")
    return 0
