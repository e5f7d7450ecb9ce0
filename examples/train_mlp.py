"""A plain PyTorch DDP script that Mentor runs as a custom trainer: an MLP learns a synthetic
two-class problem. It uses four calls of mentor_trainer, and nothing else of Mentor:
checkpoint_dir (resume after a restart), report (loss and accuracy to the job's status),
should_stop (SIGTERM: save and leave) and fail (a permanent failure with its reason).

    torchrun --nproc-per-node 2 train_mlp.py --lr 0.1     # runs without Mentor, too
"""

import argparse
import os

import torch
import torch.distributed as dist

import mentor_trainer as mentor

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--fail-at", type=int, default=-1, help="fail for good at this step")
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
data = torch.Generator().manual_seed(1)
x = torch.randn(4096, 8, generator=data)
y = ((x[:, 0] * x[:, 1]) > 0).long()  # the sign of a product: not linearly separable
x_train, y_train, x_val, y_val = x[:-512], y[:-512], x[-512:], y[-512:]

torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
    torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)))
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

saved, start = mentor.checkpoint_dir() / "state.pt", 0
if saved.exists():
    state = torch.load(saved)
    model.module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["step"]
    print(f"resumed from step {start}", flush=True)


def save(step: int) -> None:
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step}, saved.with_suffix(".tmp"))
        os.replace(saved.with_suffix(".tmp"), saved)
    dist.barrier()


for step in range(start, args.steps):
    if step == args.fail_at:
        mentor.fail("BadData", f"a bad record at step {step}", exit_code=3)
    batch = torch.randint(0, len(x_train), (64,),
                          generator=torch.Generator().manual_seed(step * world + rank))
    loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    mentor.report(step=step + 1, total_steps=args.steps, loss=loss.item(),
                  metrics={"accuracy": accuracy})
    stopping = mentor.should_stop()  # every rank asks at the same point: they agree
    if stopping or (step + 1) % 10 == 0:
        save(step + 1)
    if stopping:
        break
dist.destroy_process_group()
