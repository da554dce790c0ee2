"""``facespace models list | pull | info``: the pretrained registry from the shell."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..errors import UnknownModelError
from ..pretrained.registry import get_config, list_models
from ..pretrained.weights import install_from_file, is_cached, pull, weight_status
from .common import add_group


def register(sub: argparse._SubParsersAction) -> None:
    msub = add_group(sub, "models", help="list, fetch and describe pretrained models", dest="models_command",
                     metavar="ACTION")

    lister = msub.add_parser("list", help="registered models and whether their weights are cached and verified")
    lister.add_argument("--json", action="store_true")
    lister.set_defaults(handler=run_list)

    puller = msub.add_parser("pull", help="fetch a model's weights into the cache")
    puller.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all)")
    puller.add_argument("--from-file", metavar="PATH",
                        help="cache this local copy of the weight file instead of downloading (offline machines)")
    puller.set_defaults(handler=run_pull)

    info = msub.add_parser("info", help="a model's registry entry, parameters and multiply-adds")
    info.add_argument("name", metavar="NAME")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=run_info)


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_models():
        config = get_config(name)
        rows.append({
            "name": name, "kind": config.kind, "architecture": config.architecture,
            "embedding_size": config.embedding_size or None, "input_size": config.input_size or None,
            "normalisation": config.normalisation, "source": config.source, "licence": config.licence,
            "threshold": config.threshold, "cached": is_cached(config), **_weights(config),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':22} {'kind':9} {'dim':>4} {'input':>5} {'norm':9} {'threshold':>9} {'weights':8} source")
    for r in rows:
        threshold = f"{r['threshold']:.4f}" if r["threshold"] is not None else "-"
        print(f"{r['name']:22} {r['kind']:9} {r['embedding_size'] or '-':>4} {r['input_size'] or '-':>5} "
              f"{r['normalisation']:9} {threshold:>9} {r['weights']:8} {r['source']}")
    return 0


def _weights(config) -> dict:
    """``weights``: the model's cached weights as one status ("verified" when every file's sha256 is
    the registry's, "corrupt" when any present file's bytes differ, else "missing"; `models pull`
    fetches corrupt and missing files again) and ``weight_files``: each file's status."""
    files = weight_status(config)
    overall = next((s for s in ("corrupt", "missing") if s in files.values()), "verified")
    return {"weights": overall, "weight_files": files}


def run_pull(args: argparse.Namespace) -> int:
    names = args.names or list_models()
    if args.from_file:
        if len(names) != 1:
            raise SystemExit("facespace: error: --from-file needs exactly one model name")
        config = get_config(names[0])
        if len(config.files) != 1:
            raise SystemExit(f"facespace: error: {config.name} has several files; --from-file takes one-file models")
        key = next(iter(config.files))
        print(f"{config.name}: cached {install_from_file(config, key, Path(args.from_file))}")
        return 0
    for name in names:
        config = get_config(name)
        paths = pull(config)
        for key, path in paths.items():
            print(f"{name}: {key} -> {path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """A registered model's entry plus its complexity, or just the complexity of an architecture (nn1..nns2)."""
    from ..networks import list_architectures
    from ..networks.complexity import describe_architecture

    if args.name in list_models():
        config = get_config(args.name)
        out = asdict(config)
        out["cached"] = is_cached(config)
        out.update(_weights(config))
        if config.kind == "embedder":
            out["complexity"] = describe_architecture(config.name)
    else:
        try:
            out = describe_architecture(args.name)
        except (KeyError, ValueError):
            known = ", ".join(list_models())
            raise UnknownModelError(
                f"unknown model or architecture {args.name!r}; registered models: {known}; "
                f"architectures: {', '.join(list_architectures())}"
            ) from None
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    for key, value in out.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key:15} {value}")
    return 0
