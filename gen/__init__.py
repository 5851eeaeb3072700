"""gen: synthetic data generation (vLLM or transformers) and megadoc assembly.

Public API:
- :func:`gen.generate.generate_pool` -- rephrases or latent thoughts for every training document
  of a source, written as a resumable sharded pool (:mod:`megadocs.pools` owns its format).
- :func:`gen.assemble.assemble` -- the synthetic stream's documents for one algorithm and G as
  readable text (``POOL/assembled/{A}-g{G}/documents.jsonl``), by the megadoc rule
  (:mod:`megadocs.megadoc`) that ``train`` maps over the pool's tokens.
- :func:`gen.generate.sample_pool` -- unconditional samples (the self-distillation baseline).
- :func:`gen.tiny.make_tiny_generator` -- a tiny random Llama for tests and the demo.

This package never imports ``train``: it reads documents through :mod:`megadocs.corpus`.
"""
