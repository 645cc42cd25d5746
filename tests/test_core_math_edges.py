"""Edge cases of the core math that mutation testing (make mutation) showed no test pinned down.

Each test states the mistake it catches: a wrong scheduler setting, attention on the wrong UNet
level, uint8 wrap-around, a centroid with x and y swapped or summed over the batch, an accuracy
that reads the wrong column, the audit's linguistic roles swapped, a triples file whose BOM or
leading blank lines break the header.
"""

import numpy as np
import pytest
from diffusers import DDIMScheduler, DDPMScheduler

from diffcomp.bumps.evaluate import accuracy, contour_fractions, intensity_centroids, predict_positions, to_uint8
from diffcomp.diffusion import ddpm_scheduler, inference_steps, sampling_scheduler, unet_block_types
from diffcomp.relational.audit import (
    TriplesFileError,
    audit_file,
    audit_index_triples,
    flatten,
    read_triples,
    role_metrics,
)

DIFFUSION = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2"}


# diffusion.py


def test_the_training_scheduler_predicts_epsilon_and_clips_the_clean_estimate():
    config = ddpm_scheduler(DIFFUSION).config
    assert config.prediction_type == "epsilon" and config.clip_sample is True
    assert config.num_train_timesteps == 100 and config.beta_schedule == "squaredcos_cap_v2"


def test_the_sampler_name_picks_ddim_or_the_full_ddpm_chain():
    ddim = sampling_scheduler(DIFFUSION, "ddim")
    ddpm = sampling_scheduler(DIFFUSION, "ddpm")
    assert isinstance(ddim, DDIMScheduler) and type(ddpm) is DDPMScheduler
    assert ddim.config.prediction_type == "epsilon" and ddim.config.num_train_timesteps == 100
    assert inference_steps(DIFFUSION, {"sampler": "ddim", "num_inference_steps": 7}) == 7
    assert inference_steps(DIFFUSION, {"sampler": "ddpm", "num_inference_steps": 7}) == 100


def test_attention_blocks_go_on_the_named_levels_and_nowhere_else():
    down, up = unet_block_types(3, [1], "AttnDownBlock2D")
    assert down == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    assert up == ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert unet_block_types(2, [], "AttnDownBlock2D")[0] == ("DownBlock2D", "DownBlock2D")
    with pytest.raises(ValueError, match=r"attention levels \[2\] do not exist in a 2-level UNet"):
        unet_block_types(2, [2], "AttnDownBlock2D")  # the level equal to the count is one too many


# bumps/evaluate.py


def test_to_uint8_rounds_and_clips_instead_of_wrapping_around():
    got = to_uint8(np.array([-0.1, 0.0, 0.6, 1.0, 1.2]))
    assert got.dtype == np.uint8 and got.tolist() == [0, 0, 153, 255, 255]


def test_intensity_centroids_match_a_per_image_reference_on_unclipped_images():
    rng = np.random.default_rng(0)
    images = rng.uniform(-0.5, 1.5, size=(3, 5, 7))  # samplers overshoot [0, 1]: mass is clipped first
    got = intensity_centroids(images)
    for k, image in enumerate(images):
        mass = 1.0 - np.clip(image, 0.0, 1.0)
        ys, xs = np.mgrid[1:6, 1:8]  # label coordinates: pixel (column i, row j) at (i + 1, j + 1)
        expected = [(mass * xs).sum() / mass.sum(), (mass * ys).sum() / mass.sum()]
        np.testing.assert_allclose(got[k], expected, rtol=1e-12)


def test_a_faint_bump_still_has_a_centroid_and_a_blank_image_has_none():
    faint = np.ones((1, 4, 4))
    faint[0, 1, 2] = 0.5  # one pixel at half mass: x = 3, y = 2
    np.testing.assert_allclose(intensity_centroids(faint)[0], [3.0, 2.0])
    assert np.isnan(intensity_centroids(np.ones((1, 4, 4)))).all()


def test_predict_positions_refuses_a_single_image_and_counts_contours_as_integers():
    with pytest.raises(ValueError, match=r"\(N, S, S\)"):
        predict_positions(np.ones((4, 4)))
    _, counts = predict_positions(np.ones((2, 6, 6)))
    assert counts.dtype.kind == "i" and counts.tolist() == [0, 0]


def test_accuracy_scores_x_and_y_from_their_own_columns():
    assert accuracy([[5.0, 5.0]], [[5.5, 7.0]]) == {"joint": 0.0, "x": 1.0, "y": 0.0}
    assert accuracy([[5.0, 5.0]], [[7.0, 5.5]]) == {"joint": 0.0, "x": 0.0, "y": 1.0}
    with pytest.raises(ValueError, match="zero samples"):
        accuracy(np.zeros((0, 2)), np.zeros((0, 2)))


def test_contour_fractions_separate_one_from_several():
    assert contour_fractions([0, 1, 1, 1, 2]) == {"frac_none": 0.2, "frac_single": 0.6, "frac_multi": 0.2}


# relational/audit.py


def test_the_linguistic_roles_follow_the_mention_order():
    # relation 0 mentions the top noun first: noun 0 is mentioned first twice, 1 and 2 second
    audit = audit_index_triples([[0, 1, 0], [0, 2, 0]], 3)
    assert audit["linguistic"]["completeness_r1"] == pytest.approx(100 / 3)
    assert audit["linguistic"]["completeness_r2"] == pytest.approx(200 / 3)
    # relation 1 mentions the bottom noun first: the same images, the linguistic roles swapped
    swapped = audit_index_triples([[0, 1, 1], [0, 2, 1]], 3)
    assert swapped["visual"] == audit["visual"]
    assert swapped["linguistic"]["completeness_r1"] == pytest.approx(200 / 3)


def test_flatten_keeps_coverage_and_count():
    audit = audit_index_triples([[0, 1, 0], [1, 2, 1], [2, 0, 0]], 3)
    flat = flatten(audit)
    assert flat["coverage"] == audit["coverage"] == 25.0  # 3 of 2 * 3 * 2 triples
    assert flat["n_triples"] == 3
    assert flat["visual.balance"] == audit["visual"]["balance"]


def test_role_metrics_refuse_arrays_that_are_not_one_triple_per_entry():
    with pytest.raises(ValueError, match="1-D arrays"):
        role_metrics([0, 1], [1], 2)
    with pytest.raises(ValueError, match="1-D arrays"):
        role_metrics([[0, 1]], [[1, 0]], 2)
    with pytest.raises(ValueError, match="no triples"):
        role_metrics([], [], 2)


def test_a_triples_file_with_a_bom_and_leading_blank_lines_reads(tmp_path):
    path = tmp_path / "triples.csv"
    path.write_bytes("\ufeff\n\nsubject,relation,object\nstar,on top of,heart\n".encode())
    assert read_triples(path) == [("star", "on top of", "heart")]


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"subject,relation,object\n\xff\xfe,on top of,heart\n")
    with pytest.raises(TriplesFileError, match=r"latin1\.csv: not UTF-8"):
        read_triples(path)


def test_audit_file_names_the_file_when_the_vocabulary_is_too_small(tmp_path):
    path = tmp_path / "three_nouns.csv"
    path.write_text("subject,relation,object\nstar,on top of,heart\nmoon,below,heart\n")
    with pytest.raises(TriplesFileError, match=r"three_nouns\.csv: 3 distinct nouns, more than the vocabulary size 2"):
        audit_file(path, 2)
