"""Script run by test_vllm.py in a subprocess (vLLM spawns processes: needs the __main__ guard).

Resumes the killed thoughts pool and then generates the rephrase pool with ONE loaded vLLM
engine (each engine start costs tens of seconds on 2 cores).
Usage: python vllm_pools.py GENERATOR DOCS THOUGHTS_POOL REPHRASE_POOL
"""

import json
import sys

if __name__ == "__main__":
    from gen.engines import VllmEngine
    from gen.generate import generate_pool

    generator, docs, thoughts_pool, rephrase_pool = sys.argv[1:5]
    options = json.loads(sys.argv[5])
    engine = VllmEngine(generator, enforce_eager=True, prefix_caching=True)
    generate_pool("thoughts", docs, generator, options["g"], thoughts_pool, engine=engine,
                  **options["run"])
    generate_pool("rephrase", docs, generator, options["g"], rephrase_pool, engine=engine,
                  **options["run"])
    engine.close()
