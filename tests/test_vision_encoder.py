"""Vision tower against HF's Qwen3OmniMoeVisionEncoder (fp32, eager), on the tiny and demo presets.

Random pixel rows from a fixed seed in HF's input layout: t * h * w rows per grid_thw row, each 3 x 2 x 16 x 16
values. Compared: the merged tokens (HF `pooler_output`), every deepstack feature, and the patch states before
merging (HF `last_hidden_state`). The largest difference seen is ~6e-7: HF resamples the learned positions with
its own gather-and-weight arithmetic and we with F.interpolate, equal up to float rounding.
"""
import pytest
import torch
from transformers import vision_utils

import omni_ref
from omni_ref import hf
from omni_ref.vision_encoder import interpolated_positions, merged_token_counts, patch_positions

ROW = 3 * 2 * 16 * 16
GRIDS = {"wide": [[1, 4, 6]], "tall": [[1, 8, 4]], "square": [[1, 6, 6]], "video": [[3, 4, 4]],
         "two images": [[1, 4, 6], [1, 8, 4]]}


def close(got, want):
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def pixels(grid, seed=0):
    grid = torch.tensor(grid)
    return torch.randn(int(grid.prod(-1).sum()), ROW, generator=torch.Generator().manual_seed(seed)), grid


@pytest.fixture(scope="module")
def vision_towers(preset_thinker_models):
    """(our vision tower, HF's Thinker) on each preset's checkpoint."""
    ours, theirs = preset_thinker_models
    return ours.thinker.visual.eval(), theirs.thinker


@pytest.fixture(scope="module")
def tiny_vision_tower(tiny_dir):
    """Our vision tower on the tiny checkpoint."""
    return omni_ref.load(tiny_dir, components=("thinker",)).thinker.visual


@pytest.mark.parametrize("name", GRIDS)
def test_tower_equal_hf(vision_towers, name):
    ours, theirs = vision_towers
    px, grid = pixels(GRIDS[name])
    with torch.no_grad():
        want = theirs.model.visual(px, grid_thw=grid)
        got = ours(px, grid)
    m = ours.config.spatial_merge_size
    assert got.tokens.shape == (int(grid.prod(-1).sum()) // m ** 2, ours.config.out_hidden_size)
    close(got.tokens, want.pooler_output)
    close(got.patch_states, want.last_hidden_state)
    assert len(got.deepstack) == len(want.deepstack_features) == len(ours.config.deepstack_visual_indexes)
    for mine, theirs_feature in zip(got.deepstack, want.deepstack_features):
        close(mine, theirs_feature)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_thinker_feature_path_equal_hf(vision_towers, kind):
    """HF's Thinker calls its tower through get_image_features / get_video_features, which split the tokens per
    item; our single tensor split by merged_token_counts gives the same pieces."""
    ours, theirs = vision_towers
    px, grid = pixels([[1, 4, 6], [1, 8, 4]] if kind == "image" else [[3, 4, 4], [2, 6, 4]], seed=3)
    with torch.no_grad():
        want = getattr(theirs, f"get_{kind}_features")(px, grid)
        got = ours(px, grid)
    counts = merged_token_counts(grid, ours.config.spatial_merge_size)
    for mine, theirs_item in zip(got.tokens.split(counts), want.pooler_output, strict=True):
        close(mine, theirs_item)
    for mine, theirs_feature in zip(got.deepstack, want.deepstack_features, strict=True):
        for a, b in zip(mine.split(counts), theirs_feature, strict=True):
            close(a, b)


def test_images_in_a_batch_do_not_see_each_other(tiny_vision_tower):
    (a, ga), (b, gb) = pixels([[1, 4, 6]], seed=1), pixels([[1, 8, 4]], seed=2)
    with torch.no_grad():
        both = tiny_vision_tower(torch.cat([a, b]), torch.cat([ga, gb]))
        alone = torch.cat([tiny_vision_tower(a, ga).tokens, tiny_vision_tower(b, gb).tokens])
    torch.testing.assert_close(both.tokens, alone, atol=1e-6, rtol=0)


def test_positions_equal_hf_grid_helpers(vision_towers):
    """The two positional ingredients, checked on their own so a failure says which one is off."""
    ours, _ = vision_towers
    grid, m = torch.tensor([[1, 4, 6], [3, 8, 4], [1, 6, 6]]), ours.config.spatial_merge_size
    assert torch.equal(patch_positions(grid, m), vision_utils.get_vision_position_ids(grid, m))
    side = round(ours.config.num_position_embeddings ** 0.5)
    idx, w = vision_utils.get_vision_interpolation_indices_and_weights(
        grid, side, mode="bilinear", align_corners=True, spatial_merge_size=m)
    table = ours.pos_embed.weight.detach()
    torch.testing.assert_close(interpolated_positions(table, grid, m), (table[idx] * w[..., None]).sum(1),
                               atol=1e-6, rtol=0)


def test_bad_inputs_are_named(tiny_vision_tower):
    px, grid = pixels([[1, 4, 6]])
    with pytest.raises(ValueError, match=r"24 patch rows but grid_thw \[\[1, 4, 4\]\] describes 16"):
        tiny_vision_tower(px, torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="h and w must be multiples of spatial_merge_size=2"):
        tiny_vision_tower(px, torch.tensor([[1, 3, 8]]))
    with pytest.raises(ValueError, match=r"expected \(patches, 1536\)"):
        tiny_vision_tower(px[:, :768], grid)
    with pytest.raises(ValueError, match=r"expected an integer \(num_images, 3\) tensor"):
        tiny_vision_tower(px, torch.tensor([4, 6]))
