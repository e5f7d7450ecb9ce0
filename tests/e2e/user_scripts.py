"""Training code that Mentor did not write, as its users would write it: plain torch scripts
under torchrun, using only mentor_trainer's public calls. The tests write them to disk (or into a
ConfigMap) and run them as custom trainers."""

from __future__ import annotations

# A DDP MLP on synthetic data: which side of a circle a point lies. Adam, its own checkpoint
# file, its own argument names; --fail-at ends it for good (exit 3), --pause slows each step so
# that a test can act while it runs.
CIRCLES = '''
import argparse, os, time
import torch
import torch.distributed as dist
import mentor_trainer

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--steps", type=int, default=80)
p.add_argument("--fail-at", type=int, default=-1)
p.add_argument("--pause", type=float, default=0.0)
opts = p.parse_args()

dist.init_process_group("gloo")
rank, size = dist.get_rank(), dist.get_world_size()
points = torch.rand(3000, 2, generator=torch.Generator().manual_seed(7)) * 2 - 1
labels = (points.pow(2).sum(1) < 0.5).long()
train, held_out = slice(0, 2500), slice(2500, 3000)

torch.manual_seed(1)
net = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
    torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)))
adam = torch.optim.Adam(net.parameters(), lr=opts.lr)
state_file = mentor_trainer.checkpoint_dir() / "circles.pt"
first = 0
if state_file.exists():
    saved = torch.load(state_file)
    net.module.load_state_dict(saved["net"]); adam.load_state_dict(saved["adam"])
    first = saved["step"]
    print(f"circles: resumed from step {first}", flush=True)

for step in range(first, opts.steps):
    if step == opts.fail_at:
        mentor_trainer.fail("BadRecord", f"record {step} has no label", exit_code=3)
    seed = torch.Generator().manual_seed(step * size + rank)
    pick = torch.randint(0, 2500, (128,), generator=seed)
    loss = torch.nn.functional.cross_entropy(net(points[train][pick]), labels[train][pick])
    adam.zero_grad(); loss.backward(); adam.step()
    time.sleep(opts.pause)
    with torch.no_grad():
        accuracy = (net(points[held_out]).argmax(1) == labels[held_out]).float().mean().item()
    mentor_trainer.report(step=step + 1, total_steps=opts.steps, loss=loss.item(),
                          metrics={"accuracy": accuracy})
    stop = mentor_trainer.should_stop()
    if stop or (step + 1) % 10 == 0:
        if rank == 0:
            torch.save({"net": net.module.state_dict(), "adam": adam.state_dict(),
                        "step": step + 1}, f"{state_file}.tmp")
            os.replace(f"{state_file}.tmp", state_file)
        dist.barrier()
    if stop:
        print(f"circles: stopping at step {step + 1}", flush=True)
        break
dist.destroy_process_group()
'''

# A character-level language model in the style of nanoGPT's train.py: module-level settings
# that `--key=value` arguments override, a tiny causal transformer, and an estimate of the
# held-out loss every few steps (reported as eval_loss, the name the status knows).
CHARS = '''
import math, os, sys
import torch
import torch.nn as nn
import mentor_trainer

data_path = "input.txt"
block_size, batch_size, n_embd, n_head, n_layer = 32, 16, 64, 4, 2
max_iters, eval_interval, learning_rate = 120, 40, 3e-3
for arg in sys.argv[1:]:  # nanoGPT's configurator, in two lines
    key, value = arg.removeprefix("--").split("=")
    globals()[key] = type(globals()[key])(value)

text = open(data_path, encoding="utf-8").read()[:200_000]
chars = sorted(set(text))
ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
cut = int(0.9 * len(ids))
train_ids, val_ids = ids[:cut], ids[cut:]
torch.manual_seed(1337)


def get_batch(split):
    source = train_ids if split == "train" else val_ids
    ix = torch.randint(len(source) - block_size - 1, (batch_size,))
    x = torch.stack([source[i:i + block_size] for i in ix])
    return x, torch.stack([source[i + 1:i + block_size + 1] for i in ix])


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(len(chars), n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer)
        self.head = nn.Linear(n_embd, len(chars))

    def forward(self, x, y=None):
        t = x.size(1)
        h = self.tok(x) + self.pos(torch.arange(t))
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        logits = self.head(self.blocks(h, mask=mask, is_causal=True))
        return nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))


model = GPT()
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)


@torch.no_grad()
def estimate_loss():
    model.eval()
    losses = [model(*get_batch("val")).item() for _ in range(5)]
    model.train()
    return sum(losses) / len(losses)


for it in range(max_iters):
    loss = model(*get_batch("train"))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    metrics = {"eval_loss": estimate_loss()} if (it + 1) % eval_interval == 0 else None
    mentor_trainer.report(step=it + 1, total_steps=max_iters, loss=loss.item(), metrics=metrics)
print(f"chars: {len(chars)} characters, final loss {loss.item():.3f}")
'''
