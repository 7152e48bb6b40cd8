"""Ray's output kept out of the user's terminal: what :func:`segops.cluster.runtime.quiet_ray` routes where."""

from __future__ import annotations

import logging

from segops.cluster.runtime import ISSUE_DETECTION_LOGGER, NO_CPU_WARNING, quiet_ray


def _record(name: str, message: str = "") -> logging.LogRecord:
    message = (
        message or "Operator 'MapBatches(_Segmenter)' uses 1.7GiB of memory per task on average ... memory=1825361100"
    )
    return logging.getLogger(name).makeRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_issue_detector_advice_goes_to_ray_datas_log_file_not_the_console() -> None:
    import ray.data  # noqa: F401 - configures Ray Data's loggers and handlers

    handlers = logging.getLogger("ray.data").handlers
    console = [h for h in handlers if type(h).__name__ == "PlainRayHandler"]
    files = [h for h in handlers if type(h).__name__ == "SessionFileHandler"]
    assert console and files
    before = _record(ISSUE_DETECTION_LOGGER)
    assert all(h.filter(before) for h in console)  # Ray's default: printed in the terminal

    quiet_ray()
    quiet_ray()  # idempotent: one filter
    detector = logging.getLogger(ISSUE_DETECTION_LOGGER)
    assert len(detector.filters) == 1
    record = _record(ISSUE_DETECTION_LOGGER)
    assert detector.filter(record)  # still logged ...
    assert not any(h.filter(record) for h in console)  # ... but not on the console ...
    assert all(h.filter(record) for h in files)  # ... only in <session>/logs/ray-data/ray-data.log
    other = _record("ray.data._internal.execution.streaming_executor")
    assert all(h.filter(other) for h in console)  # other Ray Data warnings are not hidden


def test_the_no_free_cpu_warning_goes_to_the_log_file_and_other_dataset_warnings_stay() -> None:
    import ray.data  # noqa: F401 - configures Ray Data's loggers and handlers

    quiet_ray()
    handlers = logging.getLogger("ray.data").handlers
    console = [h for h in handlers if type(h).__name__ == "PlainRayHandler"]
    logger = logging.getLogger("ray.data.dataset")
    text = f"{NO_CPU_WARNING}. The Dataset job will hang unless more CPUs are freed up."
    no_cpu, other = _record("ray.data.dataset", text), _record("ray.data.dataset", "Dataset is empty")
    assert logger.filter(no_cpu) and logger.filter(other)
    assert not any(h.filter(no_cpu) for h in console) and all(h.filter(other) for h in console)


def test_stderr_lines_are_filtered_at_the_file_descriptor_and_the_rest_kept_in_order(capfd) -> None:
    import os
    import re

    from segops.cluster.runtime import _stderr_without

    with _stderr_without(re.compile("noise")):
        os.write(2, b"[C++] some noise from the core\n")  # what Ray's core writes: below sys.stderr
        os.write(2, b"a real problem\n")
        os.write(2, b"more noise\n")
        os.write(2, b"a second one\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "a real problem\na second one\nafter\n"
