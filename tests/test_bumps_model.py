"""The bump denoiser's conditioning and hooks (diffcomp.bumps.model) against references worked
independently: the label encoding in numpy, the hidden layer and its recorded activations by shape."""

import numpy as np
import pytest
import torch
from torch import nn

from diffcomp.bumps.model import BumpDenoiser, hook_activations, noise_scheduler

QUICK = {"block_out_channels": [16, 32], "layers_per_block": 1, "attention_levels": [], "norm_num_groups": 8}


def quick_model(image_size=16, label_encoding_dim=32, **model):
    section = {"image_size": image_size, "model": {**QUICK, "label_encoding_dim": label_encoding_dim, **model}}
    return BumpDenoiser.from_config(section)


def test_label_encoding_is_cos_then_sin_of_the_labels_scaled_to_1000_in_numpy():
    """Each coordinate, scaled by 1000 / S (the canvas to diffusers' timestep range), encoded as
    [cos(x f_j), sin(x f_j)] with f_j = 10000^(-j / (D/2)), j < D/2 (diffusers'
    get_timestep_embedding with flip_sin_to_cos and no frequency shift); x's encoding, then y's.
    Measured difference from the reference: 1.7e-5 (float32 angles up to 1,000); 1001 / S instead
    of 1000 / S moves it by up to 0.95."""
    size, dim = 16, 32
    model = quick_model(size, dim)
    model.label_projection = nn.Identity()  # the encoding before the MLP
    labels = np.array([[0.0, 16.0], [3.25, 7.5], [12.0, 1.0]])
    got = model.encode_labels(torch.tensor(labels, dtype=torch.float32)).detach().numpy()

    half = dim // 2
    frequencies = 10000.0 ** (-np.arange(half) / half)

    def encode(values):
        angles = (values * 1000.0 / size)[:, None] * frequencies[None, :]
        return np.concatenate([np.cos(angles), np.sin(angles)], axis=1)

    expected = np.concatenate([encode(labels[:, 0]), encode(labels[:, 1])], axis=1)
    assert got.shape == (3, 2 * dim)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_the_default_hidden_layer_is_the_last_encoder_block_and_its_activations_are_flattened():
    model = quick_model(16, attention_levels=[1], block_out_channels=[16, 32, 32])  # three levels
    assert model.hidden_module(None) is model.unet.down_blocks[2]
    assert model.hidden_module("mid_block") is model.unet.mid_block
    with pytest.raises(ValueError, match="model.hidden_layer 'nowhere' is not a module of the UNet"):
        model.hidden_module("nowhere")

    store, active = [], [False]
    handle = hook_activations(model.hidden_module(None), store, active)
    x, t, labels = torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3]), torch.rand(3, 2) * 16
    with torch.no_grad():
        model(x, t, labels)
        assert store == []  # recorded only while active
        active[0] = True
        model(x, t, labels)
    handle.remove()
    # the block returns (hidden states, skip connections): the hidden states, (N, C * H * W), at 4 x 4
    (recorded,) = store
    assert recorded.shape == (3, 32 * 4 * 4) and recorded.dtype == torch.float32


def test_noise_scheduler_reads_the_sections_diffusion_keys():
    section = {"diffusion": {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2"}}
    scheduler = noise_scheduler(section)
    assert scheduler.config.num_train_timesteps == 100 and scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert len(scheduler.alphas_cumprod) == 100


@pytest.mark.parametrize(("configured", "heads"), [(None, 4), (4, 8)])
def test_attention_head_width_comes_from_the_config_or_defaults_to_8(configured, heads):
    extra = {} if configured is None else {"attention_head_dim": configured}
    model = quick_model(**extra)
    (attention,) = model.unet.mid_block.attentions  # 32 channels
    assert attention.heads == heads
