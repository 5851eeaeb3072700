"""`megadocs data prepare|info|tokenize-pool`: build and inspect token stores, tokenize generation pools."""

from __future__ import annotations

import argparse

from megadocs.cli import Destination, examples


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="prepare and inspect token stores",
        description="Tokenize a corpus into a token store (what training reads) and inspect stores.",
        **examples("megadocs data prepare --corpus stdlib --out runs/data --vocab-size 4096",
                   "megadocs data info runs/data"),
    )
    commands = parser.add_subparsers(dest="data_command", metavar="{prepare,info,tokenize-pool}")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    prepare = commands.add_parser(
        "prepare", help="tokenize a corpus into a token store",
        description="Tokenize SOURCE into DIR (train/val splits, tokenizer, manifest). A text seen before "
                    "is left out before the split (counted in the manifest). Re-running on a complete store "
                    "does nothing.",
        **examples(
            "megadocs data prepare --corpus stdlib --out runs/data --vocab-size 4096",
            "megadocs data prepare --corpus docs.jsonl --out runs/data --tokenizer /models/llama-3.1-8b",
            "megadocs data prepare --corpus arxiv.parquet --out runs/arxiv --tokenizer runs/data/tokenizer",
        ),
    )
    prepare.add_argument("--corpus", "--docs", dest="corpus", required=True, metavar="SOURCE",
                         help="a .jsonl/.jsonl.gz/.parquet file (field 'text', optional 'id'), a "
                              "directory of .txt files, a token store, or 'stdlib' (offline corpus)")
    prepare.add_argument("--out", required=True, action=Destination, folder=True, metavar="DIR", help="token store directory to create")
    tokenizer = prepare.add_mutually_exclusive_group(required=True)
    tokenizer.add_argument("--tokenizer", metavar="HF_DIR", help="use this HF tokenizer directory")
    tokenizer.add_argument("--vocab-size", type=int, metavar="N",
                           help="train a byte-level BPE with N tokens on the train split")
    prepare.add_argument("--val-docs", type=int, metavar="N",
                         help="documents held out for validation (default: 5%% of the corpus, at most 1000)")
    prepare.add_argument("--val-tokens", type=int, metavar="N",
                         help="instead of --val-docs: hold out documents until they hold N tokens (with "
                              "one EOS each), i.e. at least N // context validation windows; the paper's "
                              "1024 x 4096 is 4194304 (needs --tokenizer)")
    prepare.add_argument("--seed", type=int, default=0, help="seeds the held-out choice (default 0)")
    prepare.add_argument("--max-docs", type=int, metavar="N", help="read only the first N documents")
    prepare.set_defaults(func=_prepare, _parser=prepare)

    info = commands.add_parser(
        "info", help="summarize a token store",
        description="Check a token store as a run reads it (every split's files against the manifest, the "
                    "tokenizer) and print its splits (documents, tokens), tokenizer and source.",
        **examples("megadocs data info runs/data", "megadocs data info runs/data --json"),
    )
    info.add_argument("dir", metavar="DIR", help="token store directory")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=_info)

    tokenize = commands.add_parser(
        "tokenize-pool", help="tokenize a generation pool once, before training (CPU step)",
        description="Tokenize POOL with STORE's tokenizer into POOL/tokens/HASH/ (one task per pool shard, "
                    "resumable per shard): rephrases and samples as they are, latent documents (the real "
                    "text with its <think> thoughts, for every G the pool serves) whole, as gen assemble "
                    "writes them. Every algorithm and G the pool serves then assembles its stream from "
                    "these tokens by index; training only memory-maps, and refuses a pool not tokenized.",
        **examples("megadocs data tokenize-pool --pool runs/pool --store runs/data",
                   "megadocs data tokenize-pool --pool runs/pools/rephrase runs/pools/thoughts-g4 --store runs/data",
                   "megadocs data tokenize-pool --pool runs/pool --store runs/data --executor slurm "
                   "--profile slurm/profiles/local.yaml"),
    )
    tokenize.add_argument("--pool", required=True, action="extend", nargs="+", metavar="POOL",
                          help="a complete generation pool (several: one after the other)")
    tokenize.add_argument("--store", required=True, help="the token store training reads (data.store)")
    tokenize.add_argument("--corpus", default=None, metavar="SOURCE",
                          help="the pool's source documents moved elsewhere (default: the source its manifest "
                               "records; a moved copy must hold the same documents)")
    tokenize.add_argument("--shard", type=int, default=None, metavar="I", help="only pool shard I")
    tokenize.add_argument("--executor", choices=["local", "slurm"], default=None,
                          help="run every shard as one submitit job array (default: in this process)")
    tokenize.add_argument("--profile", default=None, help="SLURM profile YAML (a CPU partition)")
    tokenize.add_argument("--no-progress", action="store_true", help="no progress bars")
    tokenize.set_defaults(func=_tokenize_pool, _parser=tokenize)


def _prepare(args: argparse.Namespace) -> int:
    from megadocs.cli import flags_named
    from train.store import prepare

    with flags_named(args._parser):  # its options' errors name the flags typed (--vocab-size), not prepare's names
        store = prepare(args.corpus, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                        val_docs=args.val_docs, val_tokens=args.val_tokens, seed=args.seed, max_docs=args.max_docs)
    print(store.summary())
    return 0


def _info(args: argparse.Namespace) -> int:
    from megadocs.formats import dumps_json
    from train.store import TokenStore

    store = TokenStore.open(args.dir)
    store.check()  # what a run reads: a store that opens but cannot train is said here, not in a sweep's jobs
    print(dumps_json(store.manifest) if args.json else store.summary())
    return 0


def _tokenize_pool(args: argparse.Namespace) -> int:
    import json

    from megadocs.cli import flags_named
    from megadocs.errors import UserError
    from train.pool_tokens import submit_tokenize, tokenize_pool

    if args.profile and args.executor != "slurm":
        raise UserError("--profile: only used with --executor slurm")
    if args.shard is not None and (args.executor or len(args.pool) > 1):
        raise UserError("--shard: only for one pool tokenized in this process; leave --shard out")
    if args.corpus is not None and len(args.pool) > 1:
        raise UserError("--corpus: the moved source of one pool; give one --pool with it")
    for pool in args.pool:  # one JSON line per pool, printed as soon as it is done
        with flags_named(args._parser):  # --corpus: X holds other documents than the pool's source ...
            if args.executor:
                manifest = submit_tokenize(pool, args.store, args.executor, args.profile, corpus=args.corpus)
            else:
                manifest = tokenize_pool(pool, args.store, shard=args.shard, corpus=args.corpus,
                                         progress=not args.no_progress)
        print(json.dumps({"pool": pool, "complete": manifest["complete"], **manifest["statistics"]}), flush=True)
    return 0
