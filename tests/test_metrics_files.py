"""`serve --workers N` sums every worker's metric files on a scrape: a worker's empty file (made,
not sized yet, or left so by a worker killed at that moment) must not fail the scrape."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from service.runtime.metrics import WorkerFilesCollector


def worker_files(folder: Path) -> None:
    """A live worker's counter file holding 3 requests, and a dead worker's empty one."""
    counter = MmapedDict(str(folder / "counter_1001.db"))
    key = mmap_key("enricher_http_requests_total", "enricher_http_requests_total", ["route"],
                   ["transform"], "HTTP requests answered.")
    counter.write_value(key, 3.0, 0.0)
    counter.close()
    (folder / "counter_1002.db").touch()  # killed between creating its file and sizing it


def test_an_empty_worker_file_is_a_worker_with_nothing_recorded(tmp_path: Path):
    worker_files(tmp_path)
    registry = CollectorRegistry()
    WorkerFilesCollector(registry, path=str(tmp_path))
    text = generate_latest(registry).decode()
    assert 'enricher_http_requests_total{route="transform"} 3.0' in text


def test_prometheus_clients_own_collector_fails_on_it(tmp_path: Path):
    """Why WorkerFilesCollector exists: the library's collector fails the whole scrape (when a
    release fixes it, this test says so and the subclass can go)."""
    worker_files(tmp_path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    with pytest.raises(struct.error):
        generate_latest(registry)
