"""A quiet console: library noise dropped where it is logged, and nothing else."""


def test_bitsandbytes_kernels_noise_is_dropped_at_its_logger_and_nothing_else_is():
    import logging

    from arena import quiet

    quiet.quiet_libraries()
    name, start = quiet.BNB_KERNELS_NOISE
    logger = logging.getLogger(name)

    def record(message: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)

    assert not logger.filter(record(start + ": No module named 'kernels'. Please make sure ..."))
    assert logger.filter(record("Register pytorch bitsandbytes kernels because no native library was found"))
    assert logging.getLogger("bitsandbytes").filter(record(start))  # no blanket filter
