"""`megadocs data prepare|info`: build and inspect token stores."""

from __future__ import annotations

import argparse

from megadocs.cli import examples


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="prepare and inspect token stores",
        description="Tokenize a corpus into a token store (what training reads) and inspect stores.",
        **examples("megadocs data prepare --corpus stdlib --out runs/data --vocab-size 4096",
                   "megadocs data info runs/data"),
    )
    commands = parser.add_subparsers(dest="data_command", metavar="{prepare,info}")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    prepare = commands.add_parser(
        "prepare", help="tokenize a corpus into a token store",
        description="Tokenize SOURCE into DIR (train/val splits, tokenizer, manifest). Re-running on "
                    "a complete store does nothing.",
        **examples(
            "megadocs data prepare --corpus stdlib --out runs/data --vocab-size 4096",
            "megadocs data prepare --corpus docs.jsonl --out runs/data --tokenizer /models/llama-3.1-8b",
            "megadocs data prepare --corpus arxiv.parquet --out runs/arxiv --tokenizer runs/data/tokenizer",
        ),
    )
    prepare.add_argument("--corpus", "--docs", dest="corpus", required=True, metavar="SOURCE",
                         help="a .jsonl/.jsonl.gz/.parquet file (field 'text', optional 'id'), a "
                              "directory of .txt files, a token store, or 'stdlib' (offline corpus)")
    prepare.add_argument("--out", required=True, metavar="DIR", help="token store directory to create")
    tokenizer = prepare.add_mutually_exclusive_group(required=True)
    tokenizer.add_argument("--tokenizer", metavar="HF_DIR", help="use this HF tokenizer directory")
    tokenizer.add_argument("--vocab-size", type=int, metavar="N",
                           help="train a byte-level BPE with N tokens on the train split")
    prepare.add_argument("--val-docs", type=int, metavar="N",
                         help="documents held out for validation (default: 5%% of the corpus, at most 1000)")
    prepare.add_argument("--seed", type=int, default=0, help="seeds the held-out choice (default 0)")
    prepare.add_argument("--max-docs", type=int, metavar="N", help="read only the first N documents")
    prepare.set_defaults(func=_prepare)

    info = commands.add_parser(
        "info", help="summarize a token store",
        description="Print a token store's splits (documents, tokens), tokenizer and source.",
        **examples("megadocs data info runs/data", "megadocs data info runs/data --json"),
    )
    info.add_argument("dir", metavar="DIR", help="token store directory")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=_info)


def _prepare(args: argparse.Namespace) -> int:
    from train.store import prepare

    store = prepare(args.corpus, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                    val_docs=args.val_docs, seed=args.seed, max_docs=args.max_docs)
    print(store.summary())
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from train.store import TokenStore

    store = TokenStore.open(args.dir)
    print(json.dumps(store.manifest, indent=2) if args.json else store.summary())
    return 0
