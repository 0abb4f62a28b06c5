"""Figures and small teaching helpers for the notebooks: one home for every plot.

The helpers that compute something (block order undone, patches back to pixels, attention windows as a mask,
recording a module's outputs, measuring what deepstack adds) are plain torch and unit-tested in tests/test_plots.py;
the `plot_*` functions only draw, import matplotlib inside the function (omni_ref itself never needs it) and return
the figure. Nothing here is on the model's forward path.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

# One colour per modality, shared by every figure.
MODALITY_COLOURS = {"text": "tab:gray", "audio": "tab:orange", "image": "tab:green", "video": "tab:blue"}


# ---- helpers that compute ---------------------------------------------------------------------------------------

@contextmanager
def record_outputs(modules: dict):
    """While the block runs, collect the forward outputs of named modules: yields {name: [output per call]}.

    A forward hook sees a module's own output (for a Conv2d: before the activation that follows it)."""
    seen = {name: [] for name in modules}
    handles = [m.register_forward_hook(lambda _m, _in, out, name=name: seen[name].append(out.detach()))
               for name, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def window_spans(lengths) -> list[tuple[int, int]]:
    """Consecutive segment lengths -> [(start, end)] half-open index ranges."""
    spans, start = [], 0
    for n in lengths:
        spans.append((start, start + int(n)))
        start += int(n)
    return spans


def window_mask(lengths) -> torch.Tensor:
    """(T, T) bool, True where token i may attend to token j: the block-diagonal pattern of segment attention."""
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths, dtype=torch.long))
    return segment[:, None] == segment[None, :]


def modality_runs(modalities: dict) -> list[tuple[str, int, int]]:
    """{name: (T,) bool} masks of one prompt row -> [(name, start, end)] maximal runs of one modality, in order."""
    names = list(modalities)
    label = torch.stack([modalities[n] for n in names]).long().argmax(0)          # (T,) index into names
    if not torch.stack(list(modalities.values())).sum(0).eq(1).all():
        raise ValueError("every token must belong to exactly one modality")
    edges = [0] + (torch.nonzero(label[1:] != label[:-1]).flatten() + 1).tolist() + [len(label)]
    return [(names[int(label[s])], s, e) for s, e in zip(edges[:-1], edges[1:])]


def from_block_order(rows: torch.Tensor, h: int, w: int, merge: int) -> torch.Tensor:
    """Undo vision_encoder.to_block_order: (h * w, ...) rows in merge-block order -> (h, w, ...) raster grid."""
    if rows.shape[0] != h * w or h % merge or w % merge:
        raise ValueError(f"{rows.shape[0]} rows do not form an {h} x {w} grid of {merge} x {merge} blocks")
    blocks = rows.reshape(h // merge, w // merge, merge, merge, *rows.shape[1:])   # (H, W, m, m, ...)
    return blocks.transpose(1, 2).reshape(h, w, *rows.shape[1:])                   # (H*m, W*m, ...)


def unpatchify(pixel_values: torch.Tensor, grid_thw, settings) -> torch.Tensor:
    """One image's or video's pixel_values rows -> its frames (t * temporal_patch, H, W, 3), values in 0..1.

    The inverse of processor.vision.patchify followed by normalize: what the vision tower actually sees."""
    t, h, w = (int(v) for v in grid_thw)
    tp, p, m = settings.temporal_patch_size, settings.patch_size, settings.merge_size
    x = pixel_values.reshape(t, h // m, w // m, m, m, 3, tp, p, p)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t * tp, 3, h * p, w * p)    # (frames, C, H, W)
    mean = torch.tensor(settings.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(settings.image_std).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1)                       # (frames, H, W, 3)


@dataclass
class DeepstackEffect:
    """What deepstack adds to the Thinker, measured on one prompt (see `deepstack_effect`)."""
    added_norm: list[float]          # per deepstack level: mean L2 norm of the feature added at a visual position
    hidden_norm: list[float]         # mean L2 norm of the hidden state it is added to (that layer's output)
    change_visual: list[float]       # per decoder layer: relative change of its output at visual positions
    change_text_after: list[float]   # ... at text / audio positions after the first visual token
    change_before: float             # largest |change| of any layer output before the first visual token
    logits_change: float             # largest |change| of the logits anywhere


@torch.no_grad()
def deepstack_effect(thinker, input_ids: torch.Tensor, attention_mask: torch.Tensor, **media) -> DeepstackEffect:
    """Run the Thinker's decoder on one prompt twice, with and without the deepstack additions, and measure.

    Relative change of a layer's output = mean over positions of |h_with - h_without| / |h_without|."""
    emb = thinker.embed(input_ids, **media)
    if emb.deepstack is None:
        raise ValueError("the prompt has no image or video, so there is no deepstack feature to measure")
    positions, _ = thinker.prompt_positions(input_ids, attention_mask, **media)
    run = lambda masks, feats: thinker.model(emb.inputs_embeds, positions, attention_mask,  # noqa: E731
                                             output_hidden_states=True, visual_pos_masks=masks,
                                             deepstack_visual_embeds=feats)
    with_ds, without = run(emb.visual_pos_masks, emb.deepstack), run(None, None)
    vis = emb.visual_pos_masks
    first = vis.long().argmax(-1, keepdim=True)                                    # (B, 1) first visual index
    index = torch.arange(vis.shape[-1])[None]
    after, before = (index > first) & ~vis, index < first

    def rel(a, b, where):
        return float(((a - b)[where].norm(dim=-1) / b[where].norm(dim=-1)).mean())

    layers = range(1, len(with_ds.hidden_states))          # entry i + 1 is layer i's output (last one normed)
    a, b = with_ds.hidden_states, without.hidden_states
    logits = thinker.lm_head(with_ds.last_hidden_state) - thinker.lm_head(without.last_hidden_state)
    return DeepstackEffect(
        added_norm=[float(d.norm(dim=-1).mean()) for d in emb.deepstack],
        hidden_norm=[float(a[i + 1][vis].norm(dim=-1).mean()) for i in range(len(emb.deepstack))],
        change_visual=[rel(a[i], b[i], vis) for i in layers],
        change_text_after=[rel(a[i], b[i], after) for i in layers],
        change_before=max(float((a[i] - b[i])[before].abs().max()) for i in layers),
        logits_change=float(logits.abs().max()))


# ---- figures ----------------------------------------------------------------------------------------------------

def plot_mel(features: torch.Tensor, chunk: int = 100, windows=(), title: str = "log-mel"):
    """A (mel, frames) log-mel image with the 1 s conv chunks marked (thin) and attention windows (thick)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 2.8))
    ax.imshow(features, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
    for x in range(chunk, features.shape[1], chunk):
        ax.axvline(x - 0.5, color="white", lw=0.6, alpha=0.7)
    for x in windows:
        ax.axvline(x - 0.5, color="cyan", lw=2.5)
    ax.set_xlabel(f"mel frame (100 per second); white lines every {chunk} frames = conv chunks")
    ax.set_ylabel("mel bin")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_attention_windows(window_tokens, chunk_tokens, response: torch.Tensor | None = None,
                           tokens_per_second: float = 13):
    """The audio encoder's attention pattern over the token axis (block-diagonal windows, chunk boundaries as
    ticks) and, optionally, a per-token response curve (e.g. how much each output token changed)."""
    import matplotlib.pyplot as plt
    rows = 2 if response is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(11, 5.2 if rows == 2 else 3.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2][:rows]}, sharex=True)
    ax = axes[0, 0]
    T = int(sum(window_tokens))
    ax.imshow(window_mask(window_tokens), cmap="Blues", aspect="auto", interpolation="nearest",
              extent=[-0.5, T - 0.5, T - 0.5, -0.5])
    for k, (s, e) in enumerate(window_spans(window_tokens)):
        ax.text((s + e) / 2, (s + e) / 2, f"window {k}\n{e - s} tokens\n{(e - s) / tokens_per_second:.0f} s",
                ha="center", va="center", fontsize=9, color="black")
    for b in torch.cumsum(torch.as_tensor(chunk_tokens), 0).tolist()[:-1]:
        ax.axvline(b - 0.5, color="gray", lw=0.4)
    ax.set_ylabel("query token")
    ax.set_title("who attends to whom (blue = allowed); thin lines = 1 s conv chunks")
    if response is not None:
        # A log axis has no zero: tokens that did not change at all get no bar (a floor such as 1e-12 would
        # draw a change that did not happen), but a grey tick on the axis and the words "0 exactly".
        ax = axes[1, 0]
        response = torch.as_tensor(response).detach().flatten()
        index = torch.arange(len(response))
        moved = response > 0
        ax.bar(index[moved], response[moved], width=1.0, color="tab:red", label="changed")
        ax.set_yscale("log")
        ax.set_ylabel("max |change|")
        xaxis = ax.get_xaxis_transform()                     # x in tokens, y in axes fractions
        ax.scatter(index[~moved], [0.03] * int((~moved).sum()), marker="|", s=30, color="0.4",
                   transform=xaxis, label="unchanged (exactly 0)")
        for s, e in window_spans(window_tokens):
            if not moved[s:e].any():
                ax.text((s + e) / 2, 0.5, "0 exactly:\nno token changed", transform=xaxis, ha="center",
                        va="center", fontsize=10, color="0.3")
        for s, _ in window_spans(window_tokens)[1:]:
            ax.axvline(s - 0.5, color="tab:blue", lw=1.5)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("audio token (key)" if response is None else "audio token")
    fig.tight_layout()
    return fig


def plot_patches(image, grid_h: int, grid_w: int, merge: int, patch: int):
    """Left: the resized picture with its patch grid (thin) and merge groups (thick). Right: which row of
    pixel_values each patch is, showing that the merge x merge patches of one token are consecutive rows."""
    import matplotlib.pyplot as plt
    from ..vision_encoder import to_block_order
    order = torch.empty(grid_h * grid_w, dtype=torch.long)
    order[to_block_order(torch.arange(grid_h * grid_w).reshape(grid_h, grid_w), merge)] = torch.arange(grid_h * grid_w)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.9))
    a.imshow(image)
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    b.imshow((rows // merge + cols // merge) % 2, cmap="Pastel1", vmax=8, interpolation="nearest")   # groups
    for ax, scale in ((a, patch), (b, 1)):
        for x in range(grid_w + 1):
            ax.axvline(x * scale - 0.5, color="white" if ax is a else "gray", lw=1.6 if x % merge == 0 else 0.3)
        for y in range(grid_h + 1):
            ax.axhline(y * scale - 0.5, color="white" if ax is a else "gray", lw=1.6 if y % merge == 0 else 0.3)
        ax.set_xticks([]), ax.set_yticks([])
    for r in range(grid_h):
        for c in range(grid_w):
            b.text(c, r, str(int(order[r * grid_w + c])), ha="center", va="center", fontsize=6.5)
    a.set_title(f"{grid_w * patch}x{grid_h * patch} px: {grid_w}x{grid_h} patches of {patch} px, "
                f"{merge}x{merge} groups")
    b.set_title("row of pixel_values holding each patch (block order)")
    fig.tight_layout()
    return fig


def plot_position_interpolation(table: torch.Tensor, grid_h: int, grid_w: int, interpolated: torch.Tensor,
                                channel: int = 0):
    """Left: one channel of the learned side x side position table with the points an h x w grid samples
    (align_corners: the corners coincide). Right: the interpolated values, one per patch (raster order)."""
    import matplotlib.pyplot as plt
    side = round(table.shape[0] ** 0.5)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    square = table[:, channel].reshape(side, side)
    lim = float(square.abs().max())
    a.imshow(square, cmap="coolwarm", vmin=-lim, vmax=lim, interpolation="nearest")
    ys = torch.arange(grid_h) * (side - 1) / (grid_h - 1)
    xs = torch.arange(grid_w) * (side - 1) / (grid_w - 1)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    a.scatter(xx.flatten(), yy.flatten(), s=6, color="black")
    a.set_title(f"learned table {side}x{side}, channel {channel};\ndots: where the {grid_h}x{grid_w} patches sample it")
    b.imshow(interpolated[..., channel], cmap="coolwarm", vmin=-lim, vmax=lim, interpolation="nearest")
    b.set_title(f"bilinear result: one vector per patch ({grid_h}x{grid_w})")
    fig.tight_layout()
    return fig


def plot_vision_rotary(cos: torch.Tensor, dims: dict):
    """cos(rotary angle) over the patch grid for chosen dimensions {title: dimension}; cos is (h, w, head_dim)
    in raster order."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(dims), figsize=(3.2 * len(dims), 2.6))
    for ax, (title, d) in zip(axes, dims.items()):
        ax.imshow(cos[..., d], cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("patch column")
    axes[0].set_ylabel("patch row")
    fig.tight_layout()
    return fig


def plot_mrope_pairs(axes_by_name: dict):
    """Which position axis (t, h, w) drives each rotary frequency pair, one strip per config."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    fig, axes = plt.subplots(len(axes_by_name), 1, figsize=(11, 0.9 * len(axes_by_name) + 0.5), squeeze=False)
    cmap = ListedColormap(["tab:red", "tab:purple", "tab:cyan"])
    for ax, (name, axis) in zip(axes[:, 0], axes_by_name.items()):
        ax.imshow(axis[None], cmap=cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
        ax.set_yticks([0], [name])
        ax.set_xticks(range(0, len(axis), 4 if len(axis) > 20 else 1))
    axes[-1, 0].set_xlabel("frequency pair (fast -> slow);  red = t, purple = h, cyan = w")
    fig.tight_layout()
    return fig


def plot_position_axes(position_ids: torch.Tensor, modalities: dict, title: str = "TM-RoPE position ids",
                       span: tuple[int, int] | None = None, axes=(0, 1, 2)):
    """Panels of one prompt's position ids (3, T) against token index, one per axis in `axes` (0 t, 1 h, 2 w),
    coloured by modality ({name: (T,) bool}), for the tokens in `span` (start, end) or all. The dashed line is
    what 1D RoPE would give (position = token index); the y range follows the ids, so it leaves the plot."""
    import matplotlib.pyplot as plt
    start, end = span or (0, position_ids.shape[-1])
    index = torch.arange(start, end)
    shown = position_ids[:, start:end]
    fig, panels = plt.subplots(len(axes), 1, figsize=(11, 1.1 + 1.8 * len(axes)), sharex=True, squeeze=False)
    for ax, a in zip(panels[:, 0], axes):
        row = shown[a]
        for kind, where in modalities.items():
            where = where[start:end]
            if where.any():
                ax.scatter(index[where], row[where], s=5, color=MODALITY_COLOURS[kind], label=kind)
        ax.plot(index, index, ls="--", lw=0.7, color="black", label="token index (1D RoPE)")
        low, high = float(shown.min()), float(shown.max())
        ax.set_ylim(low - 0.04 * (high - low) - 1, high + 0.04 * (high - low) + 1)
        ax.set_ylabel(("t (time)", "h (height)", "w (width)")[a])
        ax.grid(alpha=0.3)
    panels[0, 0].legend(loc="upper left", markerscale=3, fontsize=8, ncol=5)
    panels[0, 0].set_title(title)
    panels[-1, 0].set_xlabel("token index in the prompt")
    fig.tight_layout()
    return fig


def plot_deepstack(effect: DeepstackEffect):
    """Left: norm of each deepstack feature vs the hidden state it lands on. Right: how much each decoder
    layer's output changes because of deepstack, at visual positions and at later text/audio positions."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2))
    levels = range(len(effect.added_norm))
    a.bar([i - 0.2 for i in levels], effect.hidden_norm, width=0.4, label="hidden state (layer output)")
    a.bar([i + 0.2 for i in levels], effect.added_norm, width=0.4, label="deepstack feature added")
    a.set_xticks(list(levels), [f"after layer {i}" for i in levels])
    a.set_ylabel("mean L2 norm at visual positions")
    a.legend(fontsize=8)
    layers = range(len(effect.change_visual))
    b.plot(layers, effect.change_visual, marker="o", color=MODALITY_COLOURS["image"], label="visual positions")
    b.plot(layers, effect.change_text_after, marker="o", color=MODALITY_COLOURS["text"],
           label="text/audio after the first visual token")
    b.set_xticks(list(layers), [f"layer {i}" + (" + norm" if i == len(layers) - 1 else "") for i in layers])
    b.set_ylabel("relative change of the output")
    b.set_title("with vs without deepstack", fontsize=10)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- the processor, AuT and TM-RoPE pictured (notebooks 01 and 02, issue 9) --------------------------------------

@torch.no_grad()
def conv_reach(audio_tower, frames: int = 100) -> torch.Tensor:
    """Which output step of AuT's three stride-2 convolutions each input mel frame reaches: (frames, steps) bool.

    Measured on the tower's own convolutions, not derived: item 0 of a batch is silence (all zeros), item f + 1
    the same with frame f set to 1 in every mel bin; output step j is reached by frame f when item f + 1 differs
    there from silence. (Kernel 3, stride 2, padding 1, three times: step j sees frames 8j - 7 .. 8j + 7.)"""
    import torch.nn.functional as F
    mel = audio_tower.config.num_mel_bins
    x = torch.zeros(frames + 1, 1, mel, frames)
    x[torch.arange(1, frames + 1), 0, :, torch.arange(frames)] = 1.0
    for name in ("conv2d1", "conv2d2", "conv2d3"):
        x = F.gelu(getattr(audio_tower, name)(x))                          # (frames + 1, c, freq, steps)
    return (x[1:] != x[:1]).any(dim=2).any(dim=1)                          # (frames, steps)


def plot_conv_reach(reach: torch.Tensor, ms_per_frame: float = 10.0):
    """The (frames, steps) map of `conv_reach`: one row per output token, its frames shaded, drawn against the
    mel frames of one chunk; the part of the last tokens' window beyond the chunk is hatched (zero padding)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    frames, steps = reach.shape
    spans = [torch.nonzero(reach[:, j]).flatten()[[0, -1]].tolist() for j in range(steps)]
    width = max(last - first + 1 for first, last in spans)                 # an interior token's window
    stride = spans[-1][0] - spans[-2][0]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.imshow(reach.T.float(), cmap="Oranges", vmin=0, vmax=1.4, aspect="auto", interpolation="nearest",
              extent=[-0.5, frames - 0.5, steps - 0.5, -0.5])
    for j, (first, last) in enumerate(spans):
        ax.text((first + last) / 2, j, f"{first}-{last}", ha="center", va="center", fontsize=7)
        lo, hi = stride * j - (width - 1) // 2, stride * j + (width - 1) // 2   # the window without edges
        for a, b in ((lo, first - 1), (last + 1, hi)):                  # the part that falls on zero padding
            if b >= a:
                ax.add_patch(Rectangle((a - 0.5, j - 0.45), b - a + 1, 0.9, fill=False, hatch="///",
                                       edgecolor="0.5", lw=0))
    for edge in (-0.5, frames - 0.5):
        ax.axvline(edge, color="black", lw=1.2)
    ax.set_xlim(-width // 2 - 0.5, frames + width // 2 + 0.5)
    ax.set_xlabel(f"mel frame of the chunk ({ms_per_frame:g} ms each); hatched: zero padding beyond the chunk")
    ax.set_ylabel("output token (step)")
    ax.set_yticks(range(steps))
    ax.set_title(f"{frames} frames -> {steps} tokens: each token sees {width} frames "
                 f"({width * ms_per_frame:g} ms), one token every {stride} frames ({stride * ms_per_frame:g} ms); "
                 f"measured by impulses")
    fig.tight_layout()
    return fig


def plot_position_grid(position_ids: torch.Tensor, modalities: dict, labels: list[str],
                       title: str = "TM-RoPE position ids, token by token"):
    """A prompt's (3, T) position ids as three labelled rows (t, h, w), one column per token, each cell tinted
    by its token's modality ({name: (T,) bool}) and holding its id; thick lines mark where a media run starts
    and ends. `labels` names each token (decoded text) under its column."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch
    T = position_ids.shape[-1]
    kind = [next(name for name, where in modalities.items() if where[j]) for j in range(T)]
    colours = [[to_rgba(MODALITY_COLOURS[k], 0.35) for k in kind]] * 3
    fig, ax = plt.subplots(figsize=(max(8.0, 0.27 * T + 1.5), 3.3))
    ax.imshow(colours, aspect="auto", interpolation="nearest")
    for a in range(3):
        for j in range(T):
            v = float(position_ids[a, j])
            ax.text(j, a, f"{v:.0f}" if v == int(v) else f"{v:.1f}", ha="center", va="center", fontsize=7)
    for name, start, end in modality_runs(modalities):
        if name != "text":
            for edge in (start, end):
                ax.axvline(edge - 0.5, color="black", lw=1.6)
    ax.set_yticks([0, 1, 2], ["t (time)", "h (height)", "w (width)"])
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_xlabel("token (decoded text; media placeholders by name); black lines: media runs")
    ax.legend(handles=[Patch(color=to_rgba(MODALITY_COLOURS[k], 0.5), label=k) for k in modalities
                       if modalities[k].any()], loc="lower center", bbox_to_anchor=(0.5, 1.02), ncol=4, fontsize=8,
              frameon=False)
    ax.set_title(title, pad=24)
    fig.tight_layout()
    return fig


def plot_mel_steps(bin_hz, filters, power, mel, log_spec, floor: float, frame: int):
    """One frame of sound through the log-mel recipe. Left: the mel filters over frequency (every 16th drawn
    bold). Middle: the frame's power spectrum (201 FFT bins) and what each filter pools from it. Right: the
    frame's log10 mel energies before and after the floor `floor` (8 decades below the clip's loudest value),
    with the (x + 4) / 4 scale the model sees on the right axis."""
    import matplotlib.pyplot as plt
    import numpy as np
    bin_hz, filters = np.asarray(bin_hz), np.asarray(filters)
    power, mel, log_spec = (np.asarray(v, dtype=np.float64) for v in (power, mel, log_spec))
    centre = bin_hz @ filters / filters.sum(0)                           # weighted centre of each filter, Hz
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.4))
    a.plot(bin_hz, filters, color="0.8", lw=0.5)
    a.plot(bin_hz, filters[:, ::16], lw=1.4)
    a.set_xlabel("frequency (Hz)")
    a.set_ylabel("filter weight")
    a.set_title(f"{filters.shape[1]} mel filters (unit area):\nnarrow at low pitch, wide and low at high pitch",
                fontsize=10)
    b.semilogy(bin_hz, np.maximum(power, 1e-12), lw=0.8, color="tab:blue", label="|STFT|$^2$, 201 bins")
    b.semilogy(centre, np.maximum(mel, 1e-12), ".", ms=4, color="tab:red", label="mel energy, 128 filters")
    b.set_xlabel("frequency (Hz)")
    b.set_ylabel("power")
    b.set_title(f"frame {frame} ({frame * 10} ms): power spectrum, pooled", fontsize=10)
    b.legend(fontsize=8)
    raw = np.log10(np.maximum(mel, 1e-10))
    c.plot(raw, color="0.6", lw=1, label="log10 mel energy")
    c.plot(log_spec, color="black", lw=1.2, label="after the floor")
    c.axhline(floor, color="tab:red", ls="--", lw=1, label="floor = clip max - 8")
    c.set_xlabel("mel bin")
    c.set_ylabel("log10 power")
    c.secondary_yaxis("right", functions=(lambda x: (x + 4) / 4, lambda y: 4 * y - 4)).set_ylabel(
        "feature = (x + 4) / 4")
    c.set_title("log, floor, scale", fontsize=10)
    c.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_token_costs(seconds, audio_tokens, sides, image_tokens: dict, max_tokens: int):
    """What media cost in tokens. Left: audio tokens against duration (the 1 s chunk rule's staircase, with
    12.5 and 13 tokens per second for comparison). Right: image tokens against the longer side for a few aspect
    ratios ({label: tokens per side}), log-log, with the max_pixels ceiling."""
    import matplotlib.pyplot as plt
    import numpy as np
    seconds = np.asarray(seconds)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6))
    a.step(seconds, audio_tokens, where="post", color=MODALITY_COLOURS["audio"], label="audio_token_count")
    a.plot(seconds, 12.5 * seconds, ls=":", color="0.4", label="12.5 per second (1 per 80 ms)")
    a.plot(seconds, 13 * seconds, ls="--", color="0.4", lw=0.8, label="13 per second")
    for s in range(1, int(seconds.max()) + 1):
        a.axvline(s, color="0.85", lw=0.8)
        at = int(np.searchsorted(seconds, s - 1e-9))
        if at < len(seconds):
            a.annotate(f"{audio_tokens[at]} at {s} s", (s, audio_tokens[at]), textcoords="offset points",
                       xytext=(-60, 12), fontsize=8, arrowprops=dict(arrowstyle="->", lw=0.6))
    a.set_xlabel("seconds of sound (grey lines: 1 s chunks)")
    a.set_ylabel("audio tokens")
    a.set_title("every full second gives 13, the tail its own ceil-halved share", fontsize=10)
    a.legend(fontsize=8)
    for label, tokens in image_tokens.items():
        b.loglog(sides, tokens, label=label)
    b.axhline(max_tokens, color="tab:red", ls="--", lw=1, label=f"max_pixels: {max_tokens} tokens")
    b.set_xlabel("longer side of the picture (pixels)")
    b.set_ylabel("image tokens")
    b.set_title("a picture costs (H/32) x (W/32) tokens, until max_pixels shrinks it", fontsize=10)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- routing and decoding (notebooks 03 and 04) --------------------------------------------------------------

def plot_expert_usage(usage: dict, title: str = "expert usage"):
    """Heatmaps (layer x expert) side by side, one per entry of usage {name: (L, E) fraction of tokens}."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(usage), figsize=(4.2 * len(usage), 2.8), squeeze=False)
    vmax = max(float(u.max()) for u in usage.values())
    for ax, (name, u) in zip(axes[0], usage.items()):
        im = ax.imshow(u.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        ax.set_yticks(range(u.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), label="share of tokens choosing the expert")
    fig.suptitle(title, y=1.04)
    return fig


def plot_load(counts: torch.Tensor, top_k: int, title: str = "tokens per expert"):
    """Bar chart of one layer's expert counts (E,) with the perfectly balanced level N*k/E."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 2.4))
    ax.bar(range(len(counts)), counts.numpy(), color="tab:blue")
    ax.axhline(counts.sum().item() / len(counts), color="tab:red", ls="--", label="perfect balance")
    ax.set_xlabel("expert")
    ax.set_ylabel("tokens")
    ax.set_title(f"{title} (top-{top_k})")
    ax.legend()
    return fig


def plot_decode_trace(trace: list):
    """Two panels from generate's StepRecords: the cache after each pass (positions and bytes, exact), and the
    time per token of each pass: the prefill's time divided by its prompt positions, a decode step's time as is
    (the fair comparison: a prefill pass makes T positions at once)."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 2.9))
    steps = [r.step for r in trace]
    a.plot(steps, [r.cache_length for r in trace], marker=".")
    a.set_xlabel("forward pass (0 = prefill)")
    a.set_ylabel("cached positions")
    a.set_title("the cache grows by one position per decode step")
    kib = a.twinx()
    kib.plot(steps, [r.cache_bytes / 1024 for r in trace], alpha=0)        # same line, second unit
    kib.set_ylabel("cache KiB")
    per_token = [1000 * r.seconds / r.new_positions for r in trace]
    b.bar(steps, per_token, color=["tab:orange"] + ["tab:blue"] * (len(trace) - 1))
    b.set_yscale("log")
    b.set_xlabel("forward pass (0 = prefill)")
    b.set_ylabel("ms per token (log)")
    b.set_title(f"prefill: time / {trace[0].new_positions} prompt tokens (orange); decode steps (blue)")
    fig.tight_layout()
    return fig


# ---- routing and sampling pictured (notebooks 03 and 04, issue 9) ------------------------------------------------

def nucleus_size(probs: torch.Tensor, top_p: float) -> int:
    """How many tokens top-p keeps of one distribution probs (V,): the smallest number of most likely tokens whose
    probability reaches top_p, at least one (what sampling.apply_top_p keeps, ties aside)."""
    sorted_p = probs.sort(descending=True).values
    before = sorted_p.cumsum(0) - sorted_p                     # mass of the more likely tokens
    return max(1, int((before < top_p).sum()))


def plot_router_token(probs: torch.Tensor, top_k: int, norm_topk_prob: bool = True, title: str = "one token"):
    """The router's decision for one token, probs (E,): left, all E probabilities sorted, the top-k in colour, the
    uniform 1/E and the cut after rank k drawn; right, the k mixing weights with the 1/k line."""
    import matplotlib.pyplot as plt
    E = probs.shape[-1]
    sorted_p = probs.float().sort(descending=True).values
    kept = sorted_p[:top_k]
    weights = kept / kept.sum() if norm_topk_prob else kept
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 2.9), gridspec_kw={"width_ratios": [3, 1]})
    a.bar(range(1, E + 1), sorted_p.numpy(), color=["tab:red"] * top_k + ["tab:gray"] * (E - top_k))
    a.axhline(1 / E, color="k", ls="--", lw=1, label=f"uniform 1/E = 1/{E}")
    a.axvline(top_k + 0.5, color="tab:red", ls=":", lw=1.5, label=f"top-k cut (k = {top_k})")
    a.set_yscale("log")
    a.set_xlabel("expert, ranked by router probability")
    a.set_ylabel("router probability (log)")
    a.set_title("softmax over all E experts, then keep the k largest")
    a.legend(fontsize=8, loc="upper right")
    b.bar(range(1, top_k + 1), weights.numpy(), color="tab:red")
    b.axhline(1 / top_k, color="k", ls="--", lw=1, label=f"1/k = 1/{top_k}")
    b.set_xlabel("kept expert (rank)")
    b.set_ylabel("mixing weight")
    b.set_title("renormalised: sum = 1" if norm_topk_prob else "not renormalised")
    b.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.suptitle(title, y=1.03)
    fig.tight_layout()
    return fig


def plot_sampling_filters(logits_by_name: dict, temperatures=(0.5, 1.0, 2.0), top_k: int = 50, top_p: float = 0.9,
                          marks: dict | None = None):
    """One panel per logit vector (V,): next-token probabilities sorted by rank (log-log) at several temperatures,
    the top-k cut at rank k (one line: temperature never changes the order) and, per temperature, the rank where
    top-p's nucleus ends (dotted, in the curve's colour). marks {panel label: {name: token id or ids}} draws those
    tokens on every curve at their rank: the first entry as the right answer (red stars), the others as grey dots."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(logits_by_name), figsize=(5.6 * len(logits_by_name), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, logits) in zip(axes[0], logits_by_name.items()):
        V = logits.shape[-1]
        rank = torch.arange(1, V + 1)
        curves = []
        for T, colour in zip(temperatures, colours):
            probs = torch.softmax(logits.float() / T, dim=-1)
            n = nucleus_size(probs, top_p)
            ax.plot(rank.numpy(), probs.sort(descending=True).values.numpy(), color=colour, lw=1.5,
                    label=f"T = {T:g}: top-p {top_p:g} keeps {n}")
            ax.axvline(n, color=colour, ls=":", lw=1.5)
            curves.append(probs)
        ax.axvline(top_k, color="k", ls="--", lw=1, label=f"top-k = {top_k}")
        for j, (name, tokens) in enumerate((marks or {}).get(label, {}).items()):
            tokens = torch.as_tensor(tokens).reshape(-1)
            for i, probs in enumerate(curves):
                at = (probs[None] > probs[tokens, None]).sum(-1) + 1            # their ranks (ties: the best)
                ax.plot(at.numpy(), probs[tokens].numpy(), ls="none", zorder=3, marker="*" if j == 0 else "o",
                        ms=11 if j == 0 else 5, color="tab:red" if j == 0 else "0.35",
                        label=None if i else name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("token rank (log)")
        ax.set_ylabel("probability (log)")
        ax.set_title(label, fontsize=10)
        if marks and label in marks:                       # a peaked curve fills the corners: legend outside
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("temperature reshapes the distribution; top-k cuts at a fixed rank, top-p where the mass "
                 f"reaches {top_p:g}", y=1.02)
    fig.tight_layout()
    return fig


# ---- causal convolution (notebook 06) ----------------------------------------------------------------------

def _cell(x, y, label, color):
    from matplotlib.patches import Rectangle          # plotting helpers import matplotlib lazily
    return Rectangle((x + 0.05, y - 0.1), 0.9, 0.8, facecolor=color, edgecolor="0.4", label=label)


def plot_causal_conv(ax, kernel: int = 3, dilation: int = 2, length: int = 8, output: int = 2):
    """Picture of CausalConv's left padding: the (kernel - 1) * dilation zeros in front of the input, and the
    taps that output `output` reads. Every tap lies at or before its own time step: no look-ahead."""
    pad = (kernel - 1) * dilation
    for i in range(-pad, length):                         # input row (y = 1.5), padding cells grey
        ax.add_patch(_cell(i, 1.5, "0" if i < 0 else f"x{i}", "0.85" if i < 0 else "white"))
    for t in range(length):                               # output row (y = 0)
        ax.add_patch(_cell(t, 0, f"y{t}", "#ffe0b0" if t == output else "white"))
    for j in range(kernel):                               # the taps of the highlighted output
        src = output - (kernel - 1 - j) * dilation
        ax.annotate("", xy=(output + 0.5, 0.7), xytext=(src + 0.5, 1.4),
                    arrowprops=dict(arrowstyle="->", color="C3" if src < 0 else "C0", lw=1.5))
    for p in ax.patches:
        ax.text(p.get_x() + 0.5, p.get_y() + 0.4, p.get_label(), ha="center", va="center", fontsize=8)
    ax.set_xlim(-pad - 0.5, length + 0.5)
    ax.set_ylim(-0.3, 2.4)
    ax.axis("off")
    ax.set_title(f"causal conv, kernel {kernel}, dilation {dilation}: {pad} zeros of left padding, none on the right")


# ---- Talker, MTP and Code2Wav (notebooks 05 and 06) ------------------------------------------------------------

def envelope(x, window: int):
    """Lowest and highest value of every `window` consecutive samples of a 1D signal: (lo, hi), each
    (ceil(n / window),). A waveform of 50 000 samples drawn as lines is a solid band; its envelope is not."""
    x = torch.as_tensor(x).flatten()
    pad = (-x.numel()) % window
    if pad:                                                 # repeat the last sample: min/max stay honest
        x = torch.cat([x, x[-1:].expand(pad)])
    blocks = x.reshape(-1, window)
    return blocks.min(dim=1).values, blocks.max(dim=1).values


@torch.no_grad()
def residual_dependencies(talker, hidden: torch.Tensor, code0: int) -> torch.Tensor:
    """Which code of one frame depends on which, measured by intervention (greedy, as the MTP decodes).

    hidden (1, 1, H): the Talker's last normed state; code0: its codebook-0 code. Runs the frame once as is and
    once per codebook q with code q forced to another value (the following codes then follow from it, greedily).
    Returns (N, N) floats: entry [q, j] = max |change| of the logits that choose code j when code q is forced
    (0 where j <= q: a code never depends on the ones after it)."""
    from ..layers import KVCache
    predictor = talker.code_predictor
    n, vocab = len(predictor.lm_head) + 1, predictor.config.vocab_size

    def run(forced: int | None):
        c0 = torch.tensor([[(code0 + 1) % vocab if forced == 0 else code0]])
        cache, codes, heads = KVCache(), [], [torch.zeros(vocab)]         # code 0's logits are the Talker's
        embeds = torch.cat([hidden, talker.model.codec_embedding(c0)], dim=1)
        logits, _ = predictor(0, inputs_embeds=embeds, past_key_values=cache)
        for step in range(n - 1):
            if step > 0:
                logits, _ = predictor(step, codes=codes[-1], past_key_values=cache)
            heads.append(logits[0, -1])
            code = logits[:, -1:].argmax(-1)                                 # (1, 1)
            codes.append((code + 1) % vocab if forced == step + 1 else code)
        return torch.stack(heads)                                           # (N, vocab)

    base = run(None)
    return torch.stack([(run(q) - base).abs().amax(dim=-1) for q in range(n)])   # (N forced, N affected)


def plot_talker_prompt(segments, accept_hidden_layer: int, codec_side=None):
    """Two panels: where each Talker prompt position comes from (user text / user media / the 9 assistant
    positions), and the assistant turn zoomed, one box per position with its text side over its codec side."""
    import matplotlib.pyplot as plt
    colours = {"user text: text_projection": "tab:gray", "user media: hidden_projection": "tab:green",
               "padding": "0.9"}
    fig, (a, b) = plt.subplots(2, 1, figsize=(11, 4.4), gridspec_kw={"height_ratios": [1, 1.6]})
    assistant = [(s, lo, hi) for s, lo, hi in segments if s not in colours]
    for source, lo, hi in segments:
        a.barh(0, hi - lo, left=lo, color=colours.get(source, "tab:purple"), edgecolor="white", lw=0.5)
    first = assistant[0][1]
    a.annotate("assistant turn (zoomed below)", xy=(first + 4.5, 0.42), xytext=(first - 3, 1.25),
               fontsize=8, ha="right", va="center", arrowprops=dict(arrowstyle="->", lw=0.8))
    a.set_ylim(-0.6, 2.6)
    a.set_yticks([])
    a.set_xlim(-0.5, segments[-1][2] + 0.5)
    a.set_xlabel("Talker prompt position")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:gray", "tab:green", "tab:purple")]
    a.legend(handles, ["user text: text_projection(token embedding)",
                       f"user media: hidden_projection(Thinker layer-{accept_hidden_layer} state)",
                       "assistant: projected text + codec embedding"], fontsize=7, loc="upper left")
    a.set_title("where each Talker prompt position comes from (the system turn is left out)")
    codec_side = codec_side or ["0", "0", "0", "codec_nothink", "codec_think_bos", "codec_think_eos", "speaker",
                                "codec_pad", "codec_bos"]
    for i, (source, lo, _) in enumerate(assistant):
        text = source.split(" + ")[0].replace("first text token", "answer\ntoken 1")
        for y, label, colour in ((1, text, "#e8e8e8"), (0, codec_side[i], "#e6dcf0")):
            b.add_patch(plt.Rectangle((i + 0.05, y + 0.08), 0.9, 0.84, facecolor=colour, edgecolor="0.5"))
            b.text(i + 0.5, y + 0.5, label.replace("_", "_\n", 1) if len(label) > 10 else label,
                   ha="center", va="center", fontsize=7.5)
        b.text(i + 0.5, 0.96, "+", ha="center", va="center", fontsize=11, color="tab:purple")
        b.text(i + 0.5, -0.18, str(lo), ha="center", va="center", fontsize=8)
    b.set_xlim(-1.6, len(assistant) + 0.1)
    b.set_ylim(-0.4, 2.05)
    b.text(-0.1, 1.5, "text side\n(projected)", ha="right", va="center", fontsize=8)
    b.text(-0.1, 0.5, "codec side\n(codec_embedding)", ha="right", va="center", fontsize=8)
    b.axis("off")
    b.set_title("the 9 assistant positions: each input vector = text side + codec side (position numbers below)",
                fontsize=10)
    fig.tight_layout()
    return fig


def plot_frame_codes(codes, dependencies, n_frames: int = 6):
    """Left: the code ids of the first frames, one column per 80 ms frame, with what produced each row.
    Right: residual_dependencies as a picture: which code changes when an earlier one is forced."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    codes = torch.as_tensor(codes)[:, :n_frames]                             # (N, frames)
    n = codes.shape[0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})
    source = torch.zeros(n, codes.shape[1])
    source[0] = 1
    a.imshow(source, cmap="Pastel1_r", vmin=0, vmax=8, aspect="auto", interpolation="nearest")
    for q in range(n):
        for t in range(codes.shape[1]):
            a.text(t, q, str(int(codes[q, t])), ha="center", va="center", fontsize=7)
    for t in range(1, codes.shape[1]):
        a.axvline(t - 0.5, color="0.3", lw=1.2)
    a.axhline(0.5, color="tab:red", lw=1)
    a.set_yticks(range(n), ["0  Talker codec_head"] + [f"{q}  MTP lm_head[{q - 1}]" for q in range(1, n)],
                 fontsize=7)
    a.set_xticks(range(codes.shape[1]), [f"frame {t}\n{80 * t}-{80 * t + 80} ms" for t in range(codes.shape[1])],
                 fontsize=7)
    a.set_title("code ids: one column per 80 ms frame, one row per codebook", fontsize=10)
    d = torch.as_tensor(dependencies).clone()
    shown = d.masked_fill(d <= 0, float("nan"))
    im = b.imshow(shown, cmap="viridis", norm=LogNorm(), interpolation="nearest")
    for q in range(n):
        b.add_patch(plt.Rectangle((q - 0.5, q - 0.5), 1, 1, facecolor="black"))
    b.set_xlabel("codebook j whose logits are measured")
    b.set_ylabel("codebook q forced to another code")
    b.set_xticks(range(0, n, 3))
    b.set_yticks(range(0, n, 3))
    fig.colorbar(im, ax=b, label="max |change of logits| (white: exactly 0)", shrink=0.8)
    b.set_title("forcing code q moves only codes after it\n(black: the forced code itself)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_waveform_frames(x, samples_per_frame: int, lost: int, sample_rate: int, zoom=(2, 5), window: int = 240,
                         fine: int = 24, detail: int = 240, title: str = "waveform"):
    """Three views of a decoded waveform, all on Code2Wav's frame grid (a decode is `lost` samples short at its
    start, so frame k begins at output sample k * samples_per_frame - lost):
    top, the min/max envelope per `window` samples of the whole signal with the 80 ms frame boundaries;
    middle, frames zoom[0]..zoom[1] - 1 as an envelope per `fine` samples; bottom, `detail` samples around the
    start of frame zoom[0] + 1, sample by sample."""
    import matplotlib.pyplot as plt
    x = torch.as_tensor(x).flatten().float()
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(11, 6.6))
    lo, hi = envelope(x, window)
    t = (torch.arange(lo.numel()) * window + lost) / sample_rate                # seconds on the frame grid
    a.fill_between(t, lo, hi, step="post", color="tab:blue", lw=0)
    for k in range(1, (x.numel() + lost) // samples_per_frame + 1):
        a.axvline(k * samples_per_frame / sample_rate, color="0.6", lw=0.5)
    a.axvspan(zoom[0] * samples_per_frame / sample_rate, zoom[1] * samples_per_frame / sample_rate,
              color="tab:orange", alpha=0.3, label=f"middle panel: frames {zoom[0]}-{zoom[1] - 1}")
    a.set_xlabel("seconds (grey lines: 80 ms frame boundaries)")
    a.set_ylabel("amplitude")
    a.legend(fontsize=8, loc="lower right")
    a.set_title(f"{title}: min/max envelope per {1000 * window / sample_rate:.0f} ms")
    start, end = max(zoom[0] * samples_per_frame - lost, 0), min(zoom[1] * samples_per_frame - lost, x.numel())
    lo, hi = envelope(x[start:end], fine)
    b.fill_between(start + torch.arange(lo.numel()) * fine, lo, hi, step="post", color="tab:blue", lw=0)
    for k in range(zoom[0], zoom[1] + 1):
        b.axvline(k * samples_per_frame - lost, color="tab:red", lw=1, ls="--")
        if k < zoom[1]:
            b.text(k * samples_per_frame - lost + samples_per_frame / 2, 1.01, f"frame {k}", ha="center",
                   va="bottom", transform=b.get_xaxis_transform(), fontsize=8, color="tab:red")
    mid = (zoom[0] + 1) * samples_per_frame - lost
    b.axvspan(mid - detail / 2, mid + detail / 2, color="tab:orange", alpha=0.3)
    b.set_ylabel("amplitude")
    b.set_title(f"frames {zoom[0]}-{zoom[1] - 1}: envelope per {fine} samples; dashed: frame k starts at output "
                f"sample {samples_per_frame} k - {lost}", fontsize=10, pad=14)
    n = torch.arange(mid - detail // 2, mid + detail // 2)
    c.plot(n, x[n], ".-", lw=0.6, ms=2.5, color="tab:blue")
    c.axvline(mid, color="tab:red", lw=1, ls="--")
    c.set_xlabel("output sample")
    c.set_ylabel("amplitude")
    c.set_title(f"{detail} samples ({1000 * detail / sample_rate:.0f} ms) around the start of frame {zoom[0] + 1} "
                f"(orange above), sample by sample", fontsize=10)
    fig.tight_layout()
    return fig


def plot_chunk_spans(spans, n_frames: int, samples_per_frame: int, lost: int):
    """One row per chunk of chunked_decode: the frames it decodes (context hatched, thrown away) and the frames
    whose audio it keeps; on the right, where that audio lands in the output and the samples skipped."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(spans) + 1.4))
    out = 0
    for row, (start, end, context) in enumerate(spans):
        y = len(spans) - 1 - row
        ax.barh(y, context, left=start - context, color="white", edgecolor="tab:blue", hatch="///", height=0.6)
        ax.barh(y, end - start, left=start, color="tab:blue", height=0.6)
        kept = (end - start) * samples_per_frame - lost
        ax.text(n_frames + 1, y, f"output samples {out}..{out + kept - 1}  ({kept} = {end - start} x "
                f"{samples_per_frame} - {lost})", va="center", fontsize=8)
        out += kept
    ax.set_yticks(range(len(spans)), [f"chunk {len(spans) - 1 - i}" for i in range(len(spans))])
    ax.set_xlim(0, n_frames * 1.75)
    ax.set_xticks(range(0, n_frames + 1, 5))
    ax.set_xlabel("codec frame")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="tab:blue", hatch="///"),
               plt.Rectangle((0, 0), 1, 1, color="tab:blue")]
    ax.legend(handles, ["left context: decoded again, audio thrown away", "chunk: audio kept"], fontsize=8,
              loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    ax.set_title("chunked_decode: each chunk is decoded from scratch together with the frames before it")
    fig.tight_layout()
    return fig


# ---- the architecture and the stage timings (notebooks 00 and 07) ----------------------------------------------

def architecture_shapes(cfg, mel_frames: int = 1000, image_grid=(1, 28, 28)) -> dict[str, str]:
    """The tensors that pass between the stages of a model with config `cfg` (an OmniConfig), as labels:
    {edge: "name (shape)"}. mel_frames: the log-mel frames of the speech (100 per second); image_grid: (t, h, w)
    patches of the image (the processor's image_grid_thw). T is the Thinker's sequence (prompt + answer), U
    the user turns' share of it, F the number of codec frames."""
    from ..audio_encoder import audio_token_count
    th, tk, c2w = cfg.thinker_config, cfg.talker_config, cfg.code2wav_config
    a, v, t = th.audio_config, th.vision_config, th.text_config
    patches = image_grid[0] * image_grid[1] * image_grid[2]
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size ** 2
    merged = patches // v.spatial_merge_size ** 2
    return {
        "mel": f"log-mel ({a.num_mel_bins}, {mel_frames})",
        "patches": f"patches ({patches}, {patch_dim})",
        "ids": "token ids (T,)",
        "audio": f"audio tokens ({audio_token_count(mel_frames, a.n_window)}, {a.output_dim})",
        "image": f"image tokens ({merged}, {v.out_hidden_size})",
        "deepstack": f"deepstack {len(v.deepstack_visual_indexes)} x ({merged}, {v.out_hidden_size})",
        "text": f"answer ids: logits over {t.vocab_size:,}",
        "handoff": f"embeddings (T, {t.hidden_size}) + layer-{tk.accept_hidden_layer} states (T, {t.hidden_size})",
        "talker_in": f"projected to (U + 9, {tk.text_config.hidden_size})",
        "to_mtp": f"hidden (1, {tk.text_config.hidden_size}) + code 0",
        "from_mtp": f"codes 1..{tk.num_code_groups - 1} -> next input (1, {tk.text_config.hidden_size})",
        "codes": f"codes ({c2w.num_quantizers}, F) x {c2w.codebook_size} at "
                 f"{24000 / c2w.samples_per_frame:g} Hz",
        "wave": f"wave (1, 1, {c2w.samples_per_frame} F) at 24 kHz",
    }


def plot_architecture(cfg, mel_frames: int = 1000, image_grid=(1, 28, 28), title: str | None = None):
    """Qwen3-Omni drawn as boxes and arrows: Processor, AuT, vision encoder, Thinker, Talker, MTP, Code2Wav,
    each box with its size from `cfg` and each arrow with the tensor it carries (architecture_shapes)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch
    s = architecture_shapes(cfg, mel_frames, image_grid)
    th, tk, c2w = cfg.thinker_config, cfg.talker_config, cfg.code2wav_config
    a, v, t, k, p = th.audio_config, th.vision_config, th.text_config, tk.text_config, tk.code_predictor_config
    up = "x".join(str(r) for r in list(c2w.upsampling_ratios) + list(c2w.upsample_rates))
    fig, ax = plt.subplots(figsize=(15, 8.2))
    ax.set_xlim(0, 16)
    ax.set_ylim(-0.2, 10)
    ax.axis("off")
    boxes = {   # name: (x, y, w, h, colour, lines)
        "Processor": (0.2, 4.9, 2.7, 4.5, "0.85", ["chat template", "16 kHz -> log-mel,", "25 ms window, 10 ms hop",
                                                   f"image -> {v.patch_size}x{v.patch_size} patches"]),
        "AuT audio encoder": (4.4, 7.7, 3.2, 1.7, MODALITY_COLOURS["audio"],
                              [f"conv x8 down to 12.5 Hz", f"{a.encoder_layers} layers x {a.d_model}"]),
        "vision encoder": (4.4, 5.6, 3.2, 1.8, MODALITY_COLOURS["image"],
                           [f"{v.depth} blocks x {v.hidden_size}", f"{v.spatial_merge_size}x{v.spatial_merge_size} "
                            f"patch merge", f"deepstack from {list(v.deepstack_visual_indexes)}"]),
        "Thinker": (9.2, 4.9, 3.3, 4.5, "tab:blue",
                    [f"{t.num_hidden_layers} layers x {t.hidden_size}", f"MoE: {t.num_experts} experts, top-"
                     f"{t.num_experts_per_tok}", f"GQA {t.num_attention_heads} / {t.num_key_value_heads} heads x "
                     f"{t.resolved_head_dim}", "TM-RoPE, KV cache", "",
                     f"deepstack added after layers 0..{len(v.deepstack_visual_indexes) - 1}",
                     f"layer {tk.accept_hidden_layer}'s states -> Talker"]),
        "Talker": (0.2, 0.3, 3.3, 3.2, "tab:purple",
                   [f"{k.num_hidden_layers} layers x {k.hidden_size}", f"MoE: {k.num_experts} experts, top-"
                    f"{k.num_experts_per_tok}", "+ a shared expert", f"code 0 of each frame", f"(vocab {k.vocab_size})"]),
        "MTP code predictor": (5.3, 0.3, 3.0, 3.2, "tab:pink",
                               [f"{p.num_hidden_layers} layers x {p.hidden_size}", f"{tk.num_code_groups - 1} "
                                "passes a frame:", f"codes 1..{tk.num_code_groups - 1}"]),
        "Code2Wav": (10.0, 0.3, 3.0, 3.2, "tab:brown",
                     [f"pre-transformer {c2w.num_hidden_layers} x {c2w.hidden_size}", "causal ConvNet",
                      f"upsample {up}", f"= {c2w.samples_per_frame} samples a frame"]),
    }
    for name, (x, y, w, h, colour, lines) in boxes.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", facecolor=colour, alpha=0.25,
                                    edgecolor=colour, lw=2))
        ax.text(x + w / 2, y + h - 0.3, name, ha="center", va="top", fontsize=11, weight="bold")
        ax.text(x + w / 2, y + h - 0.85, "\n".join(lines), ha="center", va="top", fontsize=8.5, linespacing=1.4)

    def arrow(x0, y0, x1, y1, label="", dy=0.12, colour="black", ha="center", at=0.5):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="-|>", lw=1.4, color=colour))
        if label:
            ax.text(x0 + at * (x1 - x0), y0 + at * (y1 - y0) + dy, label, ha=ha, va="bottom" if dy > 0 else "top",
                    fontsize=8,
                    color=colour, bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.85))

    ax.text(0.2, 9.75, "speech, image, text in", fontsize=9, style="italic")
    arrow(2.9, 8.55, 4.4, 8.55, s["mel"], colour=MODALITY_COLOURS["audio"])
    arrow(2.9, 6.5, 4.4, 6.5, s["patches"], colour=MODALITY_COLOURS["image"])
    arrow(7.6, 8.55, 9.2, 8.55, s["audio"], colour=MODALITY_COLOURS["audio"])
    arrow(7.6, 6.9, 9.2, 6.9, s["image"], colour=MODALITY_COLOURS["image"])
    arrow(7.6, 6.0, 9.2, 6.0, s["deepstack"], dy=-0.1, colour=MODALITY_COLOURS["image"])
    arrow(2.9, 5.15, 9.2, 5.15, s["ids"] + ", with a placeholder per audio / image token", dy=-0.1, colour="0.3")
    arrow(12.5, 8.55, 14.0, 8.55, "", colour="tab:blue")
    ax.text(14.1, 8.55, "answer text\n" + s["text"].split(": ")[1], va="center", fontsize=8.5, color="tab:blue")
    # The hand-off: Thinker states down to the Talker, drawn as an elbow.
    ax.plot([10.85, 10.85, 1.85], [4.9, 4.2, 4.2], color="tab:purple", lw=1.4)
    arrow(1.85, 4.2, 1.85, 3.55, colour="tab:purple")
    ax.text(6.3, 4.3, s["handoff"], ha="center", va="bottom", fontsize=8, color="tab:purple",
            bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.85))
    ax.text(2.0, 3.75, s["talker_in"], fontsize=8, color="tab:purple")
    arrow(3.5, 2.45, 5.3, 2.45, s["to_mtp"], colour="tab:purple")
    arrow(5.3, 1.2, 3.5, 1.2, s["from_mtp"], dy=-0.1, colour="tab:pink")
    arrow(8.3, 2.0, 10.0, 2.0, s["codes"], colour="tab:brown")
    arrow(13.0, 2.0, 14.0, 2.0, "", colour="tab:brown")
    ax.text(14.1, 2.0, "spoken answer\n" + s["wave"], va="center", fontsize=8.5, color="tab:brown")
    ax.set_title(title or "Qwen3-Omni: what each stage hands the next (shapes of the real model's config)",
                 fontsize=12)
    fig.tight_layout()
    return fig


def log_ticks(ax, lo: float, hi: float, axis: str = "y", unit: str = "") -> list[float]:
    """Label a log axis at 1-2-5 steps between lo and hi (plain numbers, not 10^k), so that a range of one or
    two decades still gets several labels. Returns the ticks."""
    import math
    from matplotlib.ticker import FixedLocator, NullLocator
    ticks = [m * 10 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo / 1.01 <= m * 10 ** e <= hi * 1.01]
    which = ax.yaxis if axis == "y" else ax.xaxis
    which.set_major_locator(FixedLocator(ticks))
    which.set_minor_locator(NullLocator())
    labels = [f"{t:g}{unit}" for t in ticks]
    (ax.set_yticklabels if axis == "y" else ax.set_xticklabels)(labels)
    return ticks


def plot_parameter_sizes(sizes, title: str = "Qwen3-Omni-30B-A3B: parameters stored vs used by one token"):
    """Bars of total and active parameters per module (latency.module_sizes rows), on a log axis in billions."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = range(len(sizes))
    total = [r.total / 1e9 for r in sizes]
    active = [r.active / 1e9 for r in sizes]
    ax.bar([i - 0.2 for i in x], total, 0.4, label="total (stored)", color="tab:blue")
    ax.bar([i + 0.2 for i in x], active, 0.4, label="active per token", color="tab:orange")
    for i, (t, a) in enumerate(zip(total, active)):
        if a < t:
            ax.text(i + 0.2, a * 1.15, f"{a / t:.0%}", ha="center", fontsize=8, color="tab:orange")
    ax.set_yscale("log")
    lo, hi = min(active + total) / 1.5, max(total) * 2
    ax.set_ylim(lo, hi)
    log_ticks(ax, lo, hi)
    ax.set_ylabel("parameters (billions, log scale)")
    ax.set_xticks(list(x), [r.name.replace(" (", "\n(") for r in sizes], fontsize=8)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_stage_times(stages: dict, title: str = "time per stage, omni_ref and HF on the same inputs"):
    """Grouped bars (log axis, ms) of bench stages: the median of the runs, a line from the fastest to the slowest
    run. A figure the bench flagged (negative, or runs spread over 50 %) is drawn as an empty hatched bar with a
    red "flagged" mark at the axis floor, never as a measurement; a side that was not run shows "n/a"."""
    import matplotlib.pyplot as plt
    names = list(stages)
    fig, ax = plt.subplots(figsize=(11, 4))
    good = [1000 * t for v in stages.values() for side in ("omni_ref", "hf") for t in (v.get("runs", {}).get(side) or
            ([v[side]] if v[side] is not None else [])) if t > 0]
    lo, hi = min(good) / 2, max(good) * 2
    for offset, side, colour in ((-0.2, "omni_ref", "tab:blue"), (0.2, "hf", "tab:orange")):
        for i, name in enumerate(names):
            v = stages[name]
            x = i + offset
            if v[side] is None:
                ax.text(x, lo * 1.1, "n/a", ha="center", va="bottom", fontsize=7, color="0.4", rotation=90)
                continue
            why = v.get("flag", {}).get(side)
            runs = [1000 * t for t in (v.get("runs", {}).get(side) or [v[side]])]
            if why:
                ax.bar(x, hi / lo, 0.4, bottom=lo, color="none", edgecolor="tab:red", hatch="xx", lw=0.8)
                ax.text(x, lo * 1.1, "flagged", ha="center", va="bottom", fontsize=7, color="tab:red",
                        rotation=90)
                continue
            ax.bar(x, 1000 * v[side] - lo, 0.4, bottom=lo, color=colour)
            ax.plot([x, x], [min(runs), max(runs)], color="black", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    log_ticks(ax, lo, hi)
    ax.set_ylabel("ms (median of runs; line: fastest to slowest)")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:blue"), plt.Rectangle((0, 0), 1, 1, color="tab:orange"),
               plt.Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="tab:red", hatch="xx")]
    ax.legend(handles, ["omni_ref", "HF", "flagged: not a measurement"], loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_step_times(steps: dict, title: str = "every step of one run, timed as it happened"):
    """The per-step seconds of one run (bench's results.<request>.steps): for the Thinker and the Talker, each
    side's first step (time to first token / code) then every later step, in ms on a log axis."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, (part, first, rest) in zip(axes, (("thinker", "thinker_ttft", "thinker_token"),
                                              ("talker", "talker_ttft", "talker_step"))):
        values, n = [], 1
        for side, colour, marker in (("omni_ref", "tab:blue", "o"), ("hf", "tab:orange", "s")):
            f = steps[part].get(side)
            if not f:
                continue
            ms = [1000 * t for t in f[first] + f[rest]]
            values, n = values + ms, max(n, len(ms))
            ax.plot(range(len(ms)), ms, marker=marker, color=colour, label=side)
        ax.set_yscale("log")
        lo, hi = min(values) / 1.5, max(values) * 1.5
        ax.set_ylim(lo, hi)
        log_ticks(ax, lo, hi)
        ax.set_xticks(range(n))
        ax.set_xlabel(f"step (0 = {first}: the prompt's prefill)")
        ax.set_ylabel("ms")
        ax.set_title(f"{part}: step 0, then one step per {'token' if part == 'thinker' else 'frame (MTP included)'}",
                     fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- training a toy (notebook 08) --------------------------------------------------------------------------------

def attention_probs(attn, x, cos, sin, mask=None, cache=None, layer_idx=0) -> torch.Tensor:
    """The softmax (B, heads, T, T) of a layers.Attention on its inputs, for figures: steps 1-8 of
    Attention.forward again (projections, QK-norm, rotary, grouped heads, scaled scores + mask), which keeps no
    probabilities itself. Without a KV cache only; tests/test_toy.py checks it against HF's output_attentions."""
    from ..layers import apply_rotary
    if cache is not None:
        raise ValueError("attention_probs recomputes a prompt's attention: run the forward with use_cache=False")
    B, T, _ = x.shape
    q = attn.q_norm(attn.q_proj(x).view(B, T, attn.heads, attn.head_dim)).transpose(1, 2)      # (B, H, T, d)
    k = attn.k_norm(attn.k_proj(x).view(B, T, attn.kv_heads, attn.head_dim)).transpose(1, 2)   # (B, Hkv, T, d)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k = k.repeat_interleave(attn.heads // attn.kv_heads, dim=1)                                # (B, H, T, d)
    scores = q @ k.transpose(2, 3) * attn.head_dim ** -0.5
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


@contextmanager
def attention_maps(thinker):
    """While the block runs, record the text decoder's attention: yields a list that receives, per decoder layer
    and call, its probabilities (B, heads, T, T), recomputed from the layer's inputs by `attention_probs`."""
    seen = []
    hook = lambda attn, args, kwargs: seen.append(attention_probs(attn, *args, **kwargs).detach())
    handles = [layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True) for layer in thinker.model.layers]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def information_bits(joint: torch.Tensor) -> torch.Tensor:
    """Mutual information in bits of a joint count table (M, E): sum p log2(p / (p_row p_col)), 0 * log 0 = 0."""
    p = joint.double() / joint.sum()
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
    nz = p > 0
    return (p[nz] * torch.log2(p[nz] / outer[nz])).sum().float()


def modality_expert_information(routing: list, masks: dict) -> torch.Tensor:
    """Mutual information, in bits, between a token's modality and the experts its layer chose: (layers,).

    Each of a token's k choices counts as one draw (modality m, expert e); with p(m, e) their joint shares,
    I = sum p(m, e) log2(p(m, e) / (p(m) p(e))). 0 when every modality spreads over the experts alike; at most
    the modality entropy (2 bits for four equally common modalities) when each modality has experts of its own.
    masks {name: (B, T) bool} must not overlap; tokens in none of them are left out (padding)."""
    return torch.stack([information_bits(torch.stack([r.expert_counts(m) for m in masks.values()]))
                        for r in routing])


def plot_toy_samples(samples: list, rate: int = 16000):
    """One sample of each toy task as the model gets it: the image, the waveform, the video's frames."""
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(12, 2.9))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 2, 2.2])
    for col, s in enumerate(samples):
        ax = fig.add_subplot(grid[0, col])
        if s.task == "colour":
            ax.imshow(s.media)
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
        elif s.task == "beeps":
            t = torch.arange(len(s.media)) / rate
            ax.plot(t.numpy(), s.media, lw=0.4, color=MODALITY_COLOURS["audio"])
            ax.set_xlabel("time (s)")
            ax.set_ylabel("amplitude")
        else:
            frames = s.media
            ax.imshow(torch.as_tensor(frames).permute(1, 0, 2, 3).reshape(frames.shape[1], -1, 3).numpy())
            ax.set_xticks([frames.shape[2] * (i + 0.5) for i in range(len(frames))], range(len(frames)))
            for i in range(1, len(frames)):
                ax.axvline(frames.shape[2] * i - 0.5, color="0.6", lw=1)
            ax.set_xlabel("frame")
            ax.set_ylabel("y (px)")
        ax.set_title(f"{s.task}: answer '{s.answer}'")
    fig.tight_layout()
    return fig


def _smooth(values, window: int):
    x = torch.tensor(values, dtype=torch.float64)
    kernel = torch.ones(window, dtype=torch.float64) / window
    return torch.nn.functional.conv1d(x[None, None], kernel[None, None]).reshape(-1)


def plot_training_curves(log: dict, tasks, window: int = 20):
    """From a training log: the answer cross-entropy per task (moving average, log axis) and the held-out
    accuracy per task during training, with the 95 % target."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.3))
    steps = [r["step"] for r in log["steps"]]
    colours = dict(zip(tasks, ("tab:green", "tab:orange", "tab:blue")))
    for task in tasks:
        ce = _smooth([r[f"{task}_ce"] for r in log["steps"]], window)
        a.plot(steps[window - 1:], ce.numpy(), color=colours[task], label=task)
        b.plot([0] + [e["step"] for e in log["evals"]], [0] + [100 * e[task] for e in log["evals"]],
               marker=".", color=colours[task], label=task)
    a.set_yscale("log")
    a.set_xlabel("training step")
    a.set_ylabel(f"answer cross-entropy (nats,\nmean of {window} steps, log)")
    a.set_title("loss on the answer tokens, per task")
    a.legend()
    b.axhline(95, color="k", ls="--", lw=1, label="target 95 %")
    b.set_xlabel("training step")
    b.set_ylabel("held-out accuracy (%)")
    b.set_title("greedy answers on held-out samples")
    b.set_ylim(0, 102)
    b.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_balance_runs(runs: dict, task: str, top_k: int):
    """Short training runs that differ only in the load-balancing coefficient, runs {coef: training log}.
    Left: the load-balancing loss per step (k = balanced). Right: the last step's share of tokens per expert,
    experts ranked, one line per layer (solid: first run, dashed: second), with the balanced level k/E."""
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2))
    styles = ("-", "--", ":")
    for (coef, log), style in zip(runs.items(), styles):
        steps = [r["step"] for r in log["steps"]]
        a.plot(steps, [r[f"{task}_aux"] for r in log["steps"]], style, color="k", label=f"coef {coef:g}")
        usage = torch.tensor(log["steps"][-1]["usage"])                          # (layers, E)
        for layer, row in enumerate(usage):
            b.plot(range(1, usage.shape[1] + 1), row.sort(descending=True).values.numpy(), style, marker=".",
                   color=f"C{layer}", label=f"coef {coef:g}, layer {layer}")
    E = usage.shape[1]
    a.axhline(top_k, color="tab:red", lw=1, label=f"balanced: k = {top_k}")
    a.set_xlabel("training step")
    a.set_ylabel("load-balancing loss")
    a.set_title("the loss the coefficient weighs")
    a.legend(fontsize=8)
    b.axhline(top_k / E, color="tab:red", lw=1, label=f"balanced k/E = {top_k}/{E}")
    b.set_xlabel("expert, ranked by share")
    b.set_ylabel("share of tokens\nchoosing the expert")
    b.set_title(f"after the last step ({len(steps)} steps)")
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_modality_experts(panels: dict, information: dict):
    """Rows: entries of panels {label: (layers, modalities, E) share of each modality's tokens choosing each
    expert}; columns: layers. Each heatmap is modality x expert; its title gives that layer's mutual information
    between modality and expert (information {label: (layers,) bits})."""
    import matplotlib.pyplot as plt
    labels = list(panels)
    L = next(iter(panels.values()))[0].shape[0]
    fig, axes = plt.subplots(len(labels), L, figsize=(3.6 * L, 2.2 * len(labels)), squeeze=False,
                             constrained_layout=True)
    for row, label in enumerate(labels):
        shares, names = panels[label]
        for layer in range(L):
            ax = axes[row, layer]
            im = ax.imshow(shares[layer].numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto",
                           interpolation="nearest")
            ax.set_yticks(range(len(names)), names)
            ax.set_xticks(range(shares.shape[-1]))
            ax.set_title(f"{label}, layer {layer}: I = {information[label][layer]:.2f} bits", fontsize=9)
            if row == len(labels) - 1:
                ax.set_xlabel("expert")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="share of the modality's\ntokens choosing the expert")
    fig.suptitle("expert usage by modality: which experts each modality's tokens choose")
    return fig


def plot_answer_attention(views: list):
    """Where the answer position looks inside the media, one panel per task. views: dicts with
    task, media, attention (the share of the media attention on each media token: a (h, w) grid for an image,
    (t, h, w) for a video, (n,) for audio) and, for audio, rate."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(views), figsize=(4.4 * len(views), 3.1),
                             gridspec_kw={"width_ratios": [1.6 if v["task"] == "motion" else 1 for v in views]})
    for ax, v in zip(axes, views):
        media, att = v["media"], v["attention"]
        if v["task"] == "colour":
            h, w = media.shape[:2]
            ax.imshow(media)
            ax.imshow(att.numpy(), extent=(0, w, h, 0), cmap="Reds", alpha=0.6, vmin=0, interpolation="nearest")
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
        elif v["task"] == "beeps":
            seconds = len(media) / v["rate"]
            t = torch.arange(len(media)) / v["rate"]
            ax.plot(t.numpy(), media, lw=0.3, color="0.6")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("amplitude")
            twin = ax.twinx()
            n = att.shape[0]
            twin.bar(((torch.arange(n) + 0.5) * seconds / n).numpy(), att.numpy(), width=seconds / n,
                     color=MODALITY_COLOURS["audio"], alpha=0.7)
            twin.set_ylabel("share of attention")
        else:
            T, S = media.shape[:2]
            groups = att.shape[0]
            pairs = torch.as_tensor(media[:2 * groups].astype("float32")).reshape(groups, 2, S, S, 3).mean(1)
            strip = pairs.permute(1, 0, 2, 3).reshape(S, groups * S, 3) / 255
            ax.imshow(strip.numpy())
            heat = att.permute(1, 0, 2).reshape(att.shape[1], -1)
            ax.imshow(heat.numpy(), extent=(0, groups * S, S, 0), cmap="Reds", alpha=0.6, vmin=0,
                      interpolation="nearest")
            for g in range(1, groups):
                ax.axvline(g * S, color="0.3", lw=1)
            ax.set_xticks([S * (g + 0.5) for g in range(groups)], [f"frames {2 * g}-{2 * g + 1}" for g in range(groups)],
                          fontsize=8)
            ax.set_ylabel("y (px)")
        ax.set_title(f"{v['task']} ('{v['answer']}')\n{v['caption']}", fontsize=9)
    fig.suptitle("where the position that writes the answer attends inside the media (trained toy, one head per "
                 "task)", y=1.04)
    fig.tight_layout()
    return fig


# ---- the whole pipeline streaming (notebook 09) --------------------------------------------------

STAGE_COLOURS = {"Thinker": "tab:blue", "Talker": "tab:green", "MTP": "tab:olive",
                 "Code2Wav": "tab:orange"}


def received_and_played(timeline):
    """The two curves of the playback panel, as (x, y) step points in seconds: the audio received
    by each instant (a step up at each audio event) and the playback cursor (0 until the first
    packet, then the wall clock, up to the end of the audio)."""
    t0, total = timeline.first_packet_s, timeline.audio_s
    rx, ry, heard = [0.0], [0.0], 0
    for t, n in timeline.audio:
        heard += n
        rx += [t, t]
        ry += [ry[-1], heard / timeline.sample_rate]
    end = max(timeline.end_s, t0 + total)
    rx.append(end)
    ry.append(ry[-1])
    return (rx, ry), ([0.0, t0, t0 + total, end], [0.0, 0.0, total, total])


def plot_stream_timeline(timeline, title: str = "one model.stream call, stage by stage"):
    """Top: one lane per stage (tools.timeline.STAGES), a bar for every call, against wall-clock
    seconds since the call; the first packet marked. Bottom: seconds of audio received so far
    (steps at each audio event) against the playback cursor started at the first packet; where the
    cursor is above the received audio, playback has run dry (shaded red)."""
    import matplotlib.pyplot as plt
    from .timeline import STAGES
    fig, (lanes, play) = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    for i, stage in enumerate(STAGES):
        spans = timeline.intervals.get(stage, [])
        lanes.broken_barh([(a, b - a) for a, b in spans], (i - 0.35, 0.7),
                          color=STAGE_COLOURS[stage], label=stage)
    i = len(STAGES)
    lanes.plot([t for t, _ in timeline.audio], [i] * len(timeline.audio), "v", color="black",
               label="audio event")
    lanes.set_yticks(range(i + 1), list(STAGES) + ["audio out"])
    lanes.set_ylim(i + 0.6, -0.6)
    fp = timeline.first_packet_s
    for ax in (lanes, play):
        ax.axvline(fp, color="tab:red", ls="--", lw=1)
    lanes.text(fp, -0.55, f" first packet {1000 * fp:.0f} ms", color="tab:red", va="top",
               fontsize=8)
    lanes.set_title(title)
    (rx, ry), (cx, cy) = received_and_played(timeline)
    play.plot(rx, ry, color="black", label="audio received")
    play.plot(cx, cy, color="tab:red", label="playback cursor (from the first packet)")
    grid = torch.linspace(0, rx[-1], 400).tolist()
    got = [timeline.audio_end(t) for t in grid]
    cur = [timeline.cursor(t) for t in grid]
    play.fill_between(grid, got, cur, where=[c > g for c, g in zip(cur, got)], color="tab:red",
                      alpha=0.2, label="playback ran dry")
    play.set_xlabel("wall-clock time since the call (s)")
    play.set_ylabel("audio (s)")
    play.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
