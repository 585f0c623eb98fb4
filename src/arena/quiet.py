"""Library log lines that are noise for arena, dropped at their own loggers (message by message): installed by
the CLI before any command imports a library, and again wherever weights load (arena used as a library)."""

from __future__ import annotations

import logging

# On a CPU with AVX512-BF16, importing bitsandbytes tries to fetch a fused 4-bit kernel from the hub through the
# `kernels` package and warns when it cannot. arena runs offline and keeps that packing off (use_one_4bit_kernel).
BNB_KERNELS_NOISE = ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community")
# int8 weights with a bfloat16 compute dtype: bitsandbytes casts each matmul's input to float16 (as it must) and says
# so for every layer of every batch; arena checks that float16 is safe for the model before such weights load.
BNB_INT8_CAST_NOISE = ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast from")
NOISE = (BNB_KERNELS_NOISE, BNB_INT8_CAST_NOISE)


class DropMessage(logging.Filter):
    """Drops one library log message (by its start) and lets every other record of that logger through."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_libraries() -> None:
    """Install each filter once (loggers exist before their library is imported, so the order does not matter)."""
    for logger_name, start in NOISE:
        logger = logging.getLogger(logger_name)
        if not any(isinstance(f, DropMessage) and f.start == start for f in logger.filters):
            logger.addFilter(DropMessage(start))
