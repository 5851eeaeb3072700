"""Script run by test_vllm.py in a subprocess (vLLM spawns processes: needs the __main__ guard).

With ONE vLLM engine, loaded as `megadocs gen` loads it (``engine_for``: gen's default settings;
each engine start costs tens of seconds on 2 cores): resumes the killed thoughts pool, generates
the rephrase pool (one document per engine call), resumes the Ctrl-C'd rephrase pool (default
chunks), and writes the engine's resolved settings to SETTINGS_JSON.
Usage: python vllm_pools.py GENERATOR DOCS THOUGHTS_POOL REPHRASE_POOL OPTIONS_JSON INTERRUPTED_POOL SETTINGS_JSON
"""

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    from gen.generate import GenerateOptions, engine_for, generate_pool

    generator, docs, thoughts_pool, rephrase_pool = sys.argv[1:5]
    options = json.loads(sys.argv[5])
    interrupted_pool, settings_json = sys.argv[6:8]
    engine = engine_for(GenerateOptions(kind="rephrase", docs=docs, generator=generator, g=options["g"],
                                        out=rephrase_pool, engine="vllm"))
    Path(settings_json).write_text(json.dumps(engine.settings()))
    generate_pool("thoughts", docs, generator, options["g"], thoughts_pool, engine=engine,
                  **options["run"])
    generate_pool("rephrase", docs, generator, options["g"], rephrase_pool, engine=engine,
                  **options["run"])
    generate_pool("rephrase", docs, generator, options["g"], interrupted_pool, engine=engine,
                  **{**options["run"], "chunk_docs": None})
    engine.close()
