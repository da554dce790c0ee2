"""``python -m facespace_train.run`` / ``torchrun -m facespace_train.run``: the train command without the CLI."""

import argparse
import json
import sys

from .config import add_arguments, from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facespace_train.run", description="Train a FaceNet embedder.")
    add_arguments(parser)
    cfg = from_args(parser.parse_args(argv))
    from .trainer import train

    summary = train(cfg)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
