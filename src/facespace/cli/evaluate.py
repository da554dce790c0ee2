"""``facespace evaluate lfw | pairs``: the verification protocol on LFW or any pair list."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..evaluation.scoring import FLIP_RULES
from .common import (_positive_int, add_group, add_pipeline_options, add_quiet_option, check_output,
                     pipeline_from_args, write_errors)


def register(sub: argparse._SubParsersAction) -> None:
    kinds = add_group(sub, "evaluate", help="verification accuracy, VAL@FAR, AUC and EER on face pairs",
                      dest="evaluate_kind", metavar="DATASET")

    lfw = kinds.add_parser("lfw", help="LFW view 2 (pairs.txt, 10 folds)",
                           description="Run the LFW 10-fold protocol. --root may be the image folder "
                                       "(<Name>/<Name>_<NNNN>.jpg) or a folder holding it and pairs.txt.")
    lfw.add_argument("--root", required=True, metavar="DIR", help="LFW folder")
    lfw.add_argument("--pairs", metavar="FILE", help="pairs file (default: pairs.txt found beside the images)")
    _add_common(lfw)
    lfw.set_defaults(handler=run_lfw)

    pairs = kinds.add_parser("pairs", help="any pair list: LFW-style file or CSV path1,path2,same[,fold]",
                             description="Run the fold protocol on a pair list. CSV rows are "
                                         "path1,path2,same[,fold]; without folds they are made with a "
                                         "fixed seed, identity-disjoint where images sit in per-person folders.")
    pairs.add_argument("--pairs", required=True, metavar="FILE", help="pairs file (.csv or LFW format)")
    pairs.add_argument("--root", metavar="DIR", help="folder the image paths are relative to "
                                                      "(default for CSV: the CSV's folder)")
    pairs.add_argument("--folds", type=_positive_int, default=10, help="folds to make when the file has none")
    pairs.add_argument("--seed", type=int, default=0, help="seed for making folds")
    _add_common(pairs)
    pairs.set_defaults(handler=run_pairs_command)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="write report.json and report_roc.png here")
    parser.add_argument("--far", type=float, default=1e-3, help="false-accept rate for VAL@FAR (default 1e-3)")
    parser.add_argument("--limit-pairs", type=_positive_int, metavar="N",
                        help="use only N pairs, spread over folds and both labels (quick checks)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    parser.add_argument("--cache-dir", metavar="DIR", help="embedding cache (default: $FACESPACE_HOME/embeddings)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    parser.add_argument("--occlude", metavar="mask[:first|both]",
                        help="draw a surgical mask (from 68 landmarks) on the first image of each pair, or on "
                             "both (the default), before embedding")
    add_quiet_option(parser)
    scoring = parser.add_argument_group("scoring (how published FaceNet numbers were measured)")
    scoring.add_argument("--flip-rule", choices=FLIP_RULES, default="mean",
                         help="with --flip: average the two views (default, what the library does) or "
                              "concatenate them")
    scoring.add_argument("--subtract-mean", action="store_true",
                         help="remove the training folds' mean embedding before the distance (cosine of "
                              "centred embeddings)")
    cross = parser.add_argument_group("cross-model (an old model's embeddings against a new one's)")
    cross.add_argument("--against", metavar="OLD_MODEL",
                       help="score every pair with one image embedded by --model and the other by this model, "
                            "in both orders, in a compatibility map's common space (--align applies to --model only)")
    cross.add_argument("--map", metavar="NAME",
                       help="with --against: the compatibility map (default: the stored one from OLD_MODEL to "
                            "--model ranked first; see facespace.compat.list_maps)")
    add_pipeline_options(parser)


def run_lfw(args: argparse.Namespace) -> int:
    from ..evaluation.pairs import find_lfw_layout, read_lfw_pairs

    images, pairs_file = find_lfw_layout(args.root, args.pairs)
    pairs = read_lfw_pairs(pairs_file, images, check_files=False)
    if pairs.n_folds < 2:
        pairs = pairs.with_folds(10, 0)
    return _evaluate(args, pairs)


def run_pairs_command(args: argparse.Namespace) -> int:
    from ..evaluation.pairs import DatasetError, read_csv_pairs, read_lfw_pairs

    pairs_file = Path(args.pairs)
    if args.root is not None and not Path(args.root).is_dir():
        raise DatasetError(f"image root {args.root} does not exist or is not a folder")
    if pairs_file.suffix.lower() == ".csv":
        pairs = read_csv_pairs(pairs_file, args.root, n_folds=args.folds, seed=args.seed, check_files=False)
    else:
        if args.root is None:
            raise DatasetError("an LFW-style pairs file needs --root, the folder of <Name>/<Name>_<NNNN>.jpg images")
        pairs = read_lfw_pairs(pairs_file, args.root, check_files=False)
    if pairs.n_folds < 2:
        pairs = pairs.with_folds(args.folds, args.seed)
    return _evaluate(args, pairs)


def _evaluate(args: argparse.Namespace, pairs) -> int:
    from ..evaluation.pairs import DatasetError
    from ..evaluation.report import run_cross_pairs, run_pairs, write_report
    from ..imageio import describe
    from ..evaluation.scoring import ScoringRule

    if not 0 < args.far < 1:
        raise DatasetError(f"--far must lie between 0 and 1, got {args.far}")
    if args.flip_rule == "concat" and not args.flip:
        raise DatasetError("--flip-rule concat needs --flip")
    if args.map and not args.against:
        raise DatasetError("--map needs --against, the old model whose embeddings it maps")
    occlusion = _occlusion(args)
    if args.against and args.flip_rule == "concat":
        raise DatasetError("--flip-rule concat cannot be used with --against (a map takes one vector per image)")
    scoring = ScoringRule(flip=args.flip_rule, subtract_mean=args.subtract_mean)
    if args.limit_pairs:
        pairs = pairs.limit(args.limit_pairs)
    if pairs.n_folds < 2:
        raise DatasetError(f"{pairs.source}: the protocol needs pairs in at least two folds")
    pairs.check_files()
    if args.out:
        check_output(args.out, "--out", folder=True)
    pipeline = pipeline_from_args(args)
    common = dict(far_target=args.far, progress=not args.quiet, cache=not args.no_cache,
                  cache_root=args.cache_dir, scoring=scoring)
    if args.against:
        against, compat = _cross_setup(args, pipeline)
        result = run_cross_pairs(pipeline, against, compat, pairs, **common)
    else:
        result = run_pairs(pipeline, pairs, occlusion=occlusion, **common)
    written = {}
    if args.out:
        with write_errors(args.out):
            written = write_report(result, args.out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
        for kind, path in written.items():
            print(f"  {kind}: {describe(path)}")
    return 0


def _occlusion(args: argparse.Namespace):
    """The parsed ``--occlude`` (None without it); refused with options it cannot combine with."""
    from ..evaluation.pairs import DatasetError
    from ..occlusion import parse_occlusion

    if args.occlude is None:
        return None
    if args.against:
        raise DatasetError("--occlude cannot be used with --against")
    if args.align == "centre":
        raise DatasetError("--occlude needs detected faces to place the mask: use --align align or margin")
    return parse_occlusion(args.occlude)


def _cross_setup(args: argparse.Namespace, pipeline):
    """The --against pipeline (its model's registered crop) and the map joining it to --model's."""
    from ..compat import find_map, load_map
    from ..evaluation.pairs import DatasetError

    against = pipeline_from_args(args, model=args.against, align=None)
    if against.model_name == pipeline.model_name:
        raise DatasetError(f"--against names the --model itself ({pipeline.model_name}): nothing to compare across")
    compat = load_map(args.map) if args.map else find_map(against.model_name, pipeline.model_name)
    for pipe in (against, pipeline):
        compat.check(pipe.model_name, pipe.preprocessing_id)
    return against, compat
