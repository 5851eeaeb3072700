"""megadocs: the umbrella of the project's packages.

It holds only what every package shares and nothing that depends on them: the command-line
dispatcher, typed-config loading with one-line errors, and corpus readers. `train`, `search`,
`gen` and `analysis` are top-level packages of their own (see docs/architecture.md).
"""

__version__ = "0.1.0"
