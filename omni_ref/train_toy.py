"""Train the toy checkpoint: `python -m omni_ref.train_toy` (or `make toy`), from a seed, on the CPU.

The Thinker of the `toy` preset learns the three tasks of toy_tasks.py (the colour of a shape in an image, the
number of beeps in a clip, the direction of a ball in a video) from freshly generated samples. Each step draws a
batch of every task, and the loss of each batch is HF's Thinker loss with labels and output_router_logits:

    loss = CE(answer tokens) + router_aux_loss_coef * load_balancing_loss

(cross-entropy only where labels are not -100, i.e. on the answer word and its <|im_end|>; the load-balancing
loss of moe.load_balancing_loss over the batch's real tokens). Gradients of the three task batches are summed
(each loss divided by 3), clipped to norm 1 and applied by AdamW; the learning rate warms up linearly, then
decays along a cosine. Everything is seeded: the same command gives the same weights, up to the float rounding
that depends on the thread count (which is why the run fixes it: --threads, default 2).

Writes data/toy/thinker.safetensors (the Thinker's parameters, fp32, omni_ref names) and data/toy/train_log.json
(settings, per-step losses and batch accuracies, held-out accuracies during training, the time it took);
`presets.write_checkpoint("toy", d)` turns them into an HF-format checkpoint directory.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import save_file

from . import presets, toy_tasks
from .model import Qwen3Omni, init_random_weights
from .processor import Processor

WEIGHTS, LOG = "thinker.safetensors", "train_log.json"


@dataclass
class Settings:
    seed: int = 0                 # weights and training samples
    steps: int = 1000
    # samples of each task per step: colour is learnt in ~150 steps, beeps in ~300, motion takes longest
    per_task: dict = field(default_factory=lambda: {"colour": 4, "beeps": 8, "motion": 12})
    aux_coef: float | None = None  # router_aux_loss_coef; None: the toy config's (0.01)
    lr: float = 3e-3
    warmup: int = 40
    min_lr_ratio: float = 0.05    # the cosine ends at lr * this
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 100
    eval_per_task: int = 24
    eval_seed: int = 1000         # held-out samples seen during training (the tests use yet another seed)
    threads: int = 2


def new_thinker(seed: int = 0, aux_coef: float | None = None) -> Qwen3Omni:
    """The untrained toy model (Thinker only), seeded like the random presets; aux_coef overrides the config's
    router_aux_loss_coef (the weight of the load-balancing loss)."""
    cfg = presets.config("toy")
    if aux_coef is not None:
        text = cfg.thinker_config.text_config.replace(router_aux_loss_coef=aux_coef)
        cfg = cfg.replace(thinker_config=cfg.thinker_config.replace(text_config=text))
    model = Qwen3Omni(cfg, components=("thinker",))
    init_random_weights(model, seed)
    return model


def processor() -> Processor:
    """The toy model's processor: the offline tokenizer and the processor files every preset shares."""
    return Processor.from_pretrained(presets.TOKENIZER_DIR)


def lr_at(step: int, s: Settings) -> float:
    """Linear warm-up to s.lr over s.warmup steps, then a cosine down to s.lr * s.min_lr_ratio."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def answer_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forced check per row: is every labelled token the argmax of the position before it? (B,) bool"""
    predicted = logits[:, :-1].argmax(-1)                   # position t predicts token t + 1
    target = labels[:, 1:]
    scored = target != -100
    return ((predicted == target) | ~scored).all(-1)


def train_step(thinker, optimizer, batches: dict, lr: float, clip: float = 1.0) -> dict:
    """One optimizer step on one batch per task: {task: (inputs, labels)} -> the step's numbers.

    Each task's loss (HF's: cross-entropy on the answer tokens + coef * load-balancing) is divided by the number
    of tasks before backward, so the summed gradient is that of the mean loss."""
    thinker.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    record = {"lr": lr}
    coef = thinker.config.text_config.router_aux_loss_coef
    chosen = 0                                     # (layers, E) expert choices of the step's real tokens
    for task, (inputs, labels) in batches.items():
        out = thinker(**inputs, labels=labels, output_router_logits=True, use_cache=False)
        (out.loss / len(batches)).backward()
        chosen = chosen + torch.stack([r.expert_counts(inputs["attention_mask"]) for r in out.routing])
        record[f"{task}_ce"] = out.loss.item() - coef * out.aux_loss.item()
        record[f"{task}_aux"] = out.aux_loss.item()
        record[f"{task}_acc"] = answer_correct(out.logits.detach(), labels).float().mean().item()
    record["grad_norm"] = torch.nn.utils.clip_grad_norm_(thinker.parameters(), clip).item()
    optimizer.step()
    record["loss"] = sum(record[f"{t}_ce"] + coef * record[f"{t}_aux"] for t in batches) / len(batches)
    k = thinker.config.text_config.num_experts_per_tok
    record["usage"] = (chosen.float() / (chosen.sum(-1, keepdim=True) / k)).tolist()   # share of tokens per expert
    return record


def make_optimizer(thinker, s: Settings):
    return torch.optim.AdamW(thinker.parameters(), lr=s.lr, betas=(0.9, 0.98), weight_decay=s.weight_decay)


def is_right(new_ids: list[int], target: list[int]) -> bool:
    """A generated answer is right when its tokens are the target's (word + <|im_end|>) as far as both go."""
    n = min(len(new_ids), len(target))
    return n > 0 and new_ids[:n] == target[:n]


@torch.no_grad()
def accuracy(model: Qwen3Omni, proc, samples: list, batch_size: int = 16, max_new_tokens: int = 4) -> float:
    """Share of samples answered right, greedy, through apply_chat_template and model.generate."""
    model.eval()
    right = 0
    im_end = proc.tokenizer.token_to_id("<|im_end|>")
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        inputs = toy_tasks.prompts(proc, chunk)
        out = model.generate(**inputs, return_audio=False, thinker_max_new_tokens=max_new_tokens,
                             thinker_eos_token_id=im_end)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        right += sum(is_right(ids, toy_tasks.answer_ids(proc, s.answer)) for ids, s in zip(new, chunk))
    return right / len(samples)


def held_out(seed: int, per_task: int) -> dict:
    return {task: toy_tasks.samples(task, per_task, seed) for task in toy_tasks.TASKS}


class Progress:
    """One self-rewriting line: step, loss, per-task batch accuracy, elapsed and time left."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.start = total, stream, time.perf_counter()

    def update(self, step: int, rec: dict, extra: str = "") -> None:
        done = step + 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / done * (self.total - done)
        bar = "#" * int(20 * done / self.total)
        accs = " ".join(f"{t} {rec[f'{t}_acc']:.2f}" for t in toy_tasks.TASKS if f"{t}_acc" in rec)
        self.stream.write(f"\r[{bar:<20}] {done}/{self.total} loss {rec['loss']:.3f} | acc {accs} | "
                          f"{elapsed / 60:.1f} min, {left / 60:.1f} min left {extra}")
        self.stream.flush()


def train(s: Settings, steps: int | None = None, progress: bool = True, evaluate: bool = True):
    """Train from scratch; returns (model, log). `steps` stops early (the schedule still follows s.steps)."""
    torch.manual_seed(s.seed)
    model = new_thinker(s.seed, s.aux_coef)
    thinker = model.thinker
    proc = processor()
    optimizer = make_optimizer(thinker, s)
    streams = {task: toy_tasks.stream(task, s.seed) for task in s.per_task}
    evals = held_out(s.eval_seed, s.eval_per_task) if evaluate else {}
    log = {"settings": asdict(s), "steps": [], "evals": []}
    bar = Progress(s.steps) if progress else None
    extra = ""
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps or s.steps):
        batches = {task: toy_tasks.batch(proc, [next(streams[task]) for _ in range(s.per_task[task])])
                   for task in s.per_task}
        rec = train_step(thinker, optimizer, batches, lr_at(step, s), s.clip)
        log["steps"].append({"step": step, **_rounded(rec)})
        if evaluate and ((step + 1) % s.eval_every == 0 or step + 1 == s.steps):
            accs = {task: accuracy(model, proc, evals[task]) for task in toy_tasks.TASKS}
            log["evals"].append({"step": step + 1, **accs})
            extra = "| held-out " + " ".join(f"{t} {a:.2f}" for t, a in accs.items())
        if bar:
            bar.update(step, rec, extra)
    if bar:
        bar.stream.write("\n")
    log["seconds"] = round(time.perf_counter() - start, 1)
    log["cpu_seconds"] = round(time.process_time() - cpu_start, 1)    # all threads together; load-independent
    log["threads"] = torch.get_num_threads()
    return model, log


def _rounded(x, digits: int = 6):
    if isinstance(x, list):
        return [_rounded(v, digits) for v in x]
    return round(x, digits) if isinstance(x, float) else x


def write_log(log: dict, path) -> None:
    """JSON with one line per step, so the file reads (and diffs) step by step."""
    with open(path, "w") as f:
        f.write("{\n")
        for key in log:
            if key != "steps":
                f.write(f"{json.dumps(key)}: {json.dumps(log[key])},\n")
        f.write('"steps": [\n' + ",\n".join(json.dumps(r) for r in log["steps"]) + "\n]\n}\n")


def save_weights(model: Qwen3Omni, out_dir) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, WEIGHTS)
    state = {k: v.detach().float().contiguous() for k, v in model.thinker.state_dict().items()}
    save_file(state, path, metadata={"format": "pt"})
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the toy Thinker on the colour / beeps / motion tasks.")
    ap.add_argument("--out", default=os.fspath(presets.TOY_DIR), help="where the weights and the log go")
    ap.add_argument("--steps", type=int, default=Settings.steps)
    ap.add_argument("--seed", type=int, default=Settings.seed)
    ap.add_argument("--threads", type=int, default=Settings.threads)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    s = Settings(seed=args.seed, steps=args.steps, threads=args.threads)
    print(f"training the toy Thinker: {s.steps} steps of {s.per_task} samples, {args.threads} threads",
          file=sys.stderr)
    model, log = train(s)
    save_weights(model, args.out)
    write_log(log, os.path.join(args.out, LOG))
    final = log["evals"][-1]
    print(f"done in {log['seconds'] / 60:.1f} min; held-out accuracy "
          + ", ".join(f"{t} {final[t]:.0%}" for t in toy_tasks.TASKS) + f"; wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
