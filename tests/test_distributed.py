"""Two processes (gloo, as torchrun starts them) follow the same path as one with the same global batch."""

import os
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from kdistill import run

# no batch norm, dropout, augmentation or batch-relational loss, and global batches that split
# evenly (1,024 training images, batches of 64): the same computation, split in two. The distil
# stage keeps its best epoch (judged on rank 0 alone, its score broadcast to the other ranks), and
# a stage starts from it
RECIPE = {
    "name": "ddp", "seed": 0, "threads": 1, "latency": False,
    "data": {"source": "digits", "labelled": 256, "val": 64, "transfer": 768},
    "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [32]}},
    "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
    "stages": [
        {"name": "teacher", "train": "teacher", "data": "full", "epochs": 2, "batch_size": 64},
        {"name": "distil", "data": "transfer", "epochs": 3, "batch_size": 64, "keep_best": True,
         "loss": [{"loss": "kd", "args": {"alpha": 1.0}}, {"loss": "hint", "student": "stages.0", "teacher": "stages.0"}]},
        {"name": "finetune", "data": "labelled", "epochs": 1, "batch_size": 64},
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, runs: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    run(RECIPE, runs_dir=runs, progress=False)


def test_two_processes_end_like_one(tmp_path):
    one = run(RECIPE, runs_dir=tmp_path / "one", progress=False)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, start_method="spawn")
    two = tmp_path / "two" / "ddp"
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["ddp"]  # rank 0 alone wrote
    a, b = load_file(one.run_dir / "student.safetensors"), load_file(two / "student.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    lines_one = (one.run_dir / "metrics.jsonl").read_text().count("\n")
    assert (two / "metrics.jsonl").read_text().count("\n") == lines_one  # metrics written once, not per rank


def _cache_worker(rank: int, world: int, port: int, root: str) -> None:
    import torch.distributed as dist

    import kdistill.train.cache as cache_module
    from kdistill.models.zoo import build_model

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    dist.init_process_group("gloo")
    cache_module.SHARD = 16  # several shards for two ranks
    torch.manual_seed(0)
    teacher = build_model("mlp", in_features=64, hidden=[16]).eval()
    x = torch.randn(70, 64, generator=torch.Generator().manual_seed(1))
    cache_module.build_cache(teacher, ["logits", "stages.0"], x, root, "cpu", dtype="float32")
    dist.destroy_process_group()


def test_ranks_write_their_own_shards_of_one_cache(tmp_path):
    import kdistill.train.cache as cache_module
    from kdistill.models.zoo import build_model

    mp.start_processes(_cache_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, start_method="spawn")
    [folder] = list((tmp_path / "two").iterdir())
    cache = cache_module.TeacherCache(folder)
    assert len(cache.meta["files"]["logits"]) == 5  # 70 samples in shards of 16, written by ranks 0 and 1
    torch.manual_seed(0)
    teacher = build_model("mlp", in_features=64, hidden=[16]).eval()
    x = torch.randn(70, 64, generator=torch.Generator().manual_seed(1))
    index = torch.arange(70)
    with torch.no_grad():
        assert torch.allclose(cache.get(["logits"], index)["logits"], teacher(x), atol=1e-5)
