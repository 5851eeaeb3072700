"""``megadocs gen rephrase|thoughts|assemble|sample``: thin adapters over gen's Python API.

Generation commands print the pool manifest's statistics as one JSON line on stdout when done;
progress and vLLM's warnings go to stderr (``VLLM_LOGGING_LEVEL=INFO`` shows all its logs). Every
command is safe to re-run: it resumes or returns what exists; Ctrl-C exits 130 with one line.
"""

from __future__ import annotations

import argparse

from gen.templates import DEFAULT_MAX_NEW_TOKENS
from megadocs.cli import Destination, examples
from megadocs.formats import ALGORITHMS, dumps_json

__all__ = ["register"]


def _add_generation_options(parser: argparse.ArgumentParser, *, kind: str) -> None:
    parser.add_argument("--generator", required=True, help="Hugging Face model directory")
    parser.add_argument("--out", required=True, action=Destination, folder=True, help="pool directory (created; re-run to resume)")
    parser.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers"],
                        help="auto: vLLM when importable, else transformers (CPU fallback)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=None, help=f"default {DEFAULT_MAX_NEW_TOKENS[kind]}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", default=None, metavar="i/n", help="run only shard i of n")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="split the documents into this many shards (default 1, or n of --shard)")
    parser.add_argument("--chunk-docs", type=int, default=None,
                        help="documents per engine call and flush (default: 16 x the engine's concurrent "
                        "sequences / G, e.g. 512 at G=32 with vLLM on an H100)")
    parser.add_argument("--max-model-len", type=int, default=None, help="generator context (default: model's)")
    parser.add_argument("--revision", default=None, help="recorded generator revision (default: fingerprint)")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                        help="vLLM: no CUDA graphs/compilation (default: on where vLLM runs on CPU)")
    parser.add_argument("--executor", choices=["local", "slurm"], default=None,
                        help="run every shard as one submitit job array (default: in this process)")
    parser.add_argument("--profile", default=None, help="SLURM profile YAML (slurm/profiles/NAME.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gen", help="generate synthetic data and assemble megadocs",
        description="Generate G synthetic texts per real document with a local generator (vLLM, or "
        "transformers on CPU) into a pool, then assemble the pool into the synthetic stream's documents "
        "(simple rephrases, stitched megadocs, latent thoughts).",
        **examples(
            "megadocs gen rephrase --corpus runs/data --generator /models/llama-3.1-8b-instruct --g 4 --out runs/pool",
            "megadocs gen assemble --pool runs/pool --algorithm stitched --g 4",
        ),
    )
    commands = parser.add_subparsers(dest="gen_command", metavar="{rephrase,thoughts,assemble,sample,diversity}")

    for kind, text in (("rephrase", "G WRAP-style rephrases per document"),
                       ("thoughts", "G latent thoughts per document (G+1 pieces)")):
        sub = commands.add_parser(
            kind, help=text,
            description=f"{text}, written to a resumable pool of shards. Re-run the same command to resume "
            "(Ctrl-C exits 130 and keeps every flushed chunk); --executor slurm runs the shards as a job array. "
            "vLLM logs warnings and errors only (VLLM_LOGGING_LEVEL=INFO shows all).",
            **examples(
                f"megadocs gen {kind} --corpus runs/data --generator /models/llama-3.1-8b-instruct --g 4 "
                "--out runs/pool",
                f"megadocs gen {kind} --corpus runs/data --generator runs/gen-tiny --g 2 --out runs/pool-cpu "
                "--engine transformers --max-new-tokens 64",
                f"megadocs gen {kind} --corpus runs/data --generator /models/llama --g 16 --out runs/pool16 "
                "--executor slurm --profile slurm/profiles/gpu-cluster.yaml --num-shards 8",
            ),
        )
        # --corpus as in `data prepare` and `demo`; --docs is the older spelling
        sub.add_argument("--corpus", "--docs", dest="docs", required=True, metavar="SOURCE",
                         help="document source (token store: its train split)")
        sub.add_argument("--g", type=int, required=True, help="generations per document")
        sub.add_argument("--template", default=None, help="prompt template YAML (default: gen/prompts/)")
        _add_generation_options(sub, kind=kind)
        sub.set_defaults(func=_generate, kind=kind, _parser=sub)

    sub = commands.add_parser(
        "sample", help="unconditional samples of a trained model (self-distillation)",
        description="Draw unconditional samples from a trained model (a run's model/ directory) into a pool: "
        "the self-distillation baseline, assembled with --algorithm self-distill.",
        **examples(
            "megadocs gen sample --generator runs/train/a/model --n-docs 1000 --out runs/self-distill",
            "megadocs gen assemble --pool runs/self-distill --algorithm self-distill --g 1",
        ),
    )
    sub.add_argument("--n-docs", type=int, required=True, help="number of samples")
    _add_generation_options(sub, kind="sample")
    sub.set_defaults(func=_generate, kind="sample", docs=None, g=1, template=None, _parser=sub)

    sub = commands.add_parser(
        "assemble", help="build the synthetic stream's documents from a pool",
        description="Assemble a pool's generations into POOL/assembled/ALGORITHM-gG/documents.jsonl: the "
        "documents of a train config's data.synthetic: {pool, algorithm, g} as readable text (training reads "
        "the same documents from `megadocs data tokenize-pool`'s tokens, not this file). Up-to-date output is kept.",
        **examples(
            "megadocs gen assemble --pool runs/pool --algorithm stitched --g 4",
            "megadocs gen assemble --pool runs/pool --algorithm simple --g 2   # a smaller G from the same pool",
        ),
    )
    sub.add_argument("--pool", required=True, help="pool directory (written by gen rephrase|thoughts|sample)")
    sub.add_argument("--algorithm", required=True,
                     choices=ALGORITHMS)
    sub.add_argument("--g", type=int, required=True, help="generations per document to use (<= the pool's G)")
    sub.add_argument("--corpus", "--docs", dest="docs", default=None, metavar="SOURCE",
                     help="document source (default: the pool's; a moved copy must hold the same documents)")
    sub.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
    sub.set_defaults(func=_assemble, _parser=sub)

    sub = commands.add_parser(
        "diversity", help="distinct n-grams, compression, source and cross-generation overlap vs G",
        description="Measure whether more generations add new text (per G' = 1, 2, 4, ... <= G; a thoughts "
        "pool at every G' its split points serve) on a sample of documents, and store the figures under `diversity` in the pool manifest.",
        **examples("megadocs gen diversity --pool runs/pools/rephrase --max-docs 2000"),
    )
    sub.add_argument("--pool", required=True, help="pool directory (written by gen rephrase|thoughts|sample)")
    sub.add_argument("--max-docs", type=int, default=None, help="documents sampled evenly (default 1000)")
    sub.set_defaults(func=_diversity)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _options(args):
    from gen.generate import GenerateOptions, parse_shard
    from megadocs.cli import flags_named
    from megadocs.config import parse_config
    from megadocs.errors import UserError

    shard, count = (None, 1 if args.num_shards is None else args.num_shards)
    if args.shard is not None:
        shard, count = parse_shard(args.shard)
        if args.num_shards not in (None, count):
            raise UserError(f"--num-shards: {args.num_shards} contradicts --shard {args.shard}")
        if args.executor:
            raise UserError("--shard: an executor runs every shard; give --num-shards instead")
    if args.profile and args.executor != "slurm":
        raise UserError("--profile: only used with --executor slurm")
    fields = {
        "kind": args.kind, "docs": args.docs, "generator": args.generator, "g": args.g, "out": args.out,
        "engine": args.engine, "temperature": args.temperature, "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens, "seed": args.seed, "num_shards": count, "shard": shard,
        "max_model_len": args.max_model_len, "revision": args.revision, "template": args.template,
        "enforce_eager": args.enforce_eager, "progress": not args.no_progress,
        "n_docs": getattr(args, "n_docs", None),
    }
    if args.chunk_docs is not None:
        fields["chunk_docs"] = args.chunk_docs
    with flags_named(args._parser, where=f"gen {args.kind}"):  # --temperature: ..., not the field's name
        return parse_config(fields, GenerateOptions, source=f"gen {args.kind}")


def _generate(args) -> int:
    from gen.engines import ENVIRONMENT_DEFAULTS
    from megadocs.procs import apply_environment_defaults

    apply_environment_defaults(ENVIRONMENT_DEFAULTS)  # before vLLM starts; shard jobs inherit it
    from megadocs.cli import flags_named

    options = _options(args)
    with flags_named(args._parser, where=f"gen {args.kind}"):  # --corpus (or --docs): no documents ...
        if args.executor:
            from gen.generate import submit_shards

            manifest = submit_shards(options, args.executor, args.profile)
        else:
            from gen.generate import run_shards

            manifest = run_shards(options)
    print(dumps_json({"pool": options.out, "complete": manifest["complete"], **manifest["statistics"]}, indent=None))
    return 0


def _assemble(args) -> int:
    from gen.assemble import assemble
    from megadocs.cli import flags_named

    with flags_named(args._parser):  # --corpus (or --docs): X holds other documents than the pool's source ...
        manifest = assemble(args.pool, args.algorithm, args.g, docs=args.docs, overwrite=args.overwrite)
    print(dumps_json({key: manifest[key] for key in ("algorithm", "g", "documents", "excluded_empty")}, indent=None))
    return 0


def _diversity(args) -> int:
    from gen.diversity import DEFAULT_MAX_DOCS, write_pool_diversity

    diversity = write_pool_diversity(args.pool, max_docs=DEFAULT_MAX_DOCS if args.max_docs is None else args.max_docs)
    print(dumps_json({"pool": args.pool, **diversity.to_json()}, indent=None))
    return 0
