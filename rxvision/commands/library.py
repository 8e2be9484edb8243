"""`rxvision library build|search|show`: the drug library file, searched by what is on a pill."""

from __future__ import annotations

import argparse
import json

LIBRARY_HELP = (
    "the library: a library.sqlite file, or a model artifact folder holding one beside card.json"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("library", help="build, search and show the drug library (facts)")
    lsub = p.add_subparsers(dest="library_command", metavar="ACTION")
    lsub.required = True

    b = lsub.add_parser("build", help="build a library file from a manifest CSV with facts")
    b.add_argument("manifest", help="manifest CSV (label, image and the c3pi-4k facts columns)")
    where = b.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="library file to write, e.g. library.sqlite")
    where.add_argument(
        "--for-model",
        metavar="MODEL",
        help="write MODEL/library.sqlite: the manifest's rows of the model's labels, and "
        "each label's look-alikes by the model's class rows",
    )
    b.set_defaults(func=build)

    s = lsub.add_parser("search", help="rank pills by imprint, colour, shape, size, score")
    s.add_argument("--imprint", help='letters and digits on the pill, e.g. "M 411"')
    s.add_argument("--color", help='colour(s), e.g. blue, "green, white", off-white')
    s.add_argument("--shape", help="e.g. round, oval, capsule")
    s.add_argument("--size", type=float, help="longest side in millimetres")
    s.add_argument("--score", type=int, help="1 = unscored, 2-4 = number of segments")
    s.add_argument("--name", help="words of the drug, brand or labeler name (a filter)")
    s.add_argument("--limit", type=int, default=10, help="hits to list (default 10)")
    s.add_argument("--json", action="store_true", help="print the hits as JSON")
    s.add_argument("--library", help=LIBRARY_HELP)
    s.set_defaults(func=search)

    w = lsub.add_parser("show", help="one pill's facts and reference photograph(s)")
    w.add_argument("ndc", help="NDC with dashes (or the label)")
    w.add_argument("--json", action="store_true", help="print the facts as JSON")
    w.add_argument("--library", help=LIBRARY_HELP)
    w.set_defaults(func=show)


def _library_path(args: argparse.Namespace) -> str:
    from ..library.database import BUILD_HINT, LibraryError

    if not args.library:
        raise LibraryError(
            f"no library given: pass --library PATH (a library.sqlite file, or "
            f"a model artifact folder holding one); {BUILD_HINT}"
        )
    return str(args.library)


def build(args: argparse.Namespace) -> int:
    from ..library.database import build_library, open_library
    from ..library.for_model import build_model_library

    missing: list[str] = []
    if args.for_model:
        built = build_model_library(args.manifest, args.for_model)
        out, missing = built.path, built.missing
    else:
        out = build_library(args.manifest, args.out)
    with open_library(out, verify=True) as lib:
        m = lib.meta
    size = out.stat().st_size / 2**20
    print(
        f"wrote {out} ({size:.1f} MiB): {m['references']} reference pills, {m['labels']} "
        f"labels; {m['groups']} identical-pill groups over {m['grouped_labels']} labels"
        + ("; look-alikes by the model's class rows" if "lookalikes_weights_sha256" in m else "")
    )
    if missing:
        print(
            f"warning: {len(missing)} of the model's labels have no row in {args.manifest} "
            f"(e.g. {', '.join(missing[:3])}): their answers show the card's metadata only",
        )
    return 0


def search(args: argparse.Namespace) -> int:
    from ..library.database import open_library
    from ..library.search import describe_hits
    from ..library.search import search as run_search

    with open_library(_library_path(args)) as lib:
        hits = run_search(
            lib,
            imprint=args.imprint,
            color=args.color,
            shape=args.shape,
            size_mm=args.size,
            score=args.score,
            name=args.name,
            limit=args.limit,
        )
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
    elif not hits:
        print("no pill in the library matches")
    else:
        print("\n".join(describe_hits(hits)))
    return 0


def show(args: argparse.Namespace) -> int:
    from ..library.database import open_library
    from ..library.lookalike import same_pill_note

    with open_library(_library_path(args)) as lib:
        refs = lib.references(args.ndc)
        twins = {
            r.id: [
                m.facts for m in lib.group_members([r.group_id]) if m.facts.label != r.facts.label
            ]
            if r.group_id is not None
            else []
            for r in refs
        }
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **r.facts.to_dict(),
                        "image_path": str(r.image_path or ""),
                        "group_id": r.group_id,
                        "same_pill": [m.to_dict() for m in twins[r.id]],
                    }
                    for r in refs
                ],
                indent=2,
            )
        )
        return 0
    for r in refs:
        f = r.facts
        print(f.describe())
        ink = f", {f.imprint_color.lower()} ink" if f.imprint_color else ""
        photo = ""
        if r.image_path:
            missing = (
                ""
                if r.image_path.is_file()
                else f" (not found on this machine: the library's photographs are expected "
                f"under {lib.image_root})"
            )
            photo = f"{r.image_path}{missing}"
        rows = [
            ("NDC", f.ndc),
            ("name", f.name),
            ("labeler", f.labeler),
            ("RxCUI", f.rxcui),
            ("controlled", f"yes, DEA schedule {f.dea_schedule}" if f.is_controlled else "no"),
            (
                "imprint",
                f"{f.imprint_text} ({f.imprint_type.lower() or 'type unknown'}{ink})"
                if f.imprint
                else "none",
            ),
            ("colour", ", ".join(f.colors)),
            ("shape", f.shape),
            ("size", f"{f.size_mm:g} mm" if f.size_mm is not None else ""),
            ("score", str(f.score or "")),
            ("part", str(f.part) if f.part > 1 else ""),
            ("status", f.status),
            ("DailyMed", f.dailymed_url or ""),
            ("photograph", photo),
        ]
        for key, value in rows:
            if value:
                print(f"  {key + ':':12s}{value}")
        note = same_pill_note(f, twins[r.id])
        if note:
            print(f"  {note}")
    return 0
