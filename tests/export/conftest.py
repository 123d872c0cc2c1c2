"""A tiny trained model shared by the export tests (made once per session, in seconds).

One epoch of a 32 px, half-width edgenet leaves BatchNorm's running statistics near their initial
values, so in eval mode the model answers almost the same for every image, and a parity check on it
would prove little. ``sharp`` is that model with its BatchNorm statistics recomputed on the train
split: its probabilities depend on the image, as a trained model's do.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.data.lakes import write_sequence_lake  # noqa: E402
from toolchain.workspace import Workspace  # noqa: E402

TINY_OVERRIDES = (("input_size", 32), ("batch_size", 16), ("width", 0.5))
MODEL = "sharp@v1"


def _register_recalibrated(ws: Workspace, source: str, name: str) -> None:
    import torch

    from toolchain.data.versions import load_dataset
    from toolchain.models.registered import load_registered_model
    from toolchain.registry import NewRecord
    from toolchain.train.batches import eval_transform
    from toolchain.models.checkpoint import state_dict_bytes

    loaded = load_registered_model(ws, source)
    images, _ = load_dataset(ws, loaded.dataset).load_split(ws, "train")
    net = loaded.module
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the one batch below
    net.train()
    with torch.no_grad():
        net(eval_transform(torch.from_numpy(images), loaded.recipe))
    sha = ws.blobs.put_bytes(state_dict_bytes(net.state_dict()))
    ws.registry.commit(NewRecord(
        kind="model", name=name, body={**loaded.record.body, "weights": sha}, version=True,
        links=((loaded.dataset, "train_data"),), blobs=((sha, "weights"),),
    ))


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with dataset ``tiny``, model ``cls@v1`` (one epoch) and ``sharp@v1``; read-only."""
    import torch

    from toolchain.data.ingest import IngestConfig, ingest
    from toolchain.train.search import TrainConfig, train

    lake = tmp_path_factory.mktemp("export-lake")
    write_sequence_lake(lake, sequences=60, frames=2)
    root = tmp_path_factory.mktemp("export-ws") / "ws"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Workspace(root) as ws:
            ingest(ws, IngestConfig(source=str(lake), name="tiny", image_size=32, workers=1))
            train(ws, TrainConfig(data="tiny", name="cls", epochs=1, overrides=TINY_OVERRIDES, device="cpu"))
            _register_recalibrated(ws, "cls@v1", "sharp")
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture()
def workspace(trained_workspace: Path, tmp_path: Path) -> Iterator[Workspace]:
    """A private copy of the trained workspace: each test starts with no exports registered."""
    root = tmp_path / "ws"
    shutil.copytree(trained_workspace, root)
    with Workspace(root) as ws:
        yield ws
