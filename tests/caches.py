"""`python -m tests.caches` (`make test` runs it before pytest): builds, once per machine, what the suite reads from
the cache folder (ARENA_CACHE, else ~/.cache/arena), as `make setup` builds the virtualenv: the embedded Gemma-3
270M converted from its GGUF, and the Kaggle twin (a virtualenv of the image's versions). Each build announces
itself; each line here says how long making it ready took."""

from __future__ import annotations

import sys
import time

from arena import embedded
from arena.errors import UserError
from arena.kaggle import twin


def main() -> int:
    for what, build in (("the embedded Gemma-3 270M", embedded.ensure_gemma3_270m),
                        ("the Kaggle twin", twin.ensure_image)):
        started = time.time()
        try:
            build()
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"test cache: {what} ready in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
