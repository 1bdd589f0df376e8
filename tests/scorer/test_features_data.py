"""Features, masks and image loading."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scorer.data import (
    ImageError,
    list_images,
    mvtec_test_samples,
    normal_image_folder,
    read_image,
    read_mask,
    to_model_tensor,
)
from scorer.features import (
    FeatureConfig,
    _gaussian_kernel,
    _pad,
    box_mean,
    defect_mask,
    gaussian_blur,
    global_norm,
    image_features,
    lowpass_pixel_maps,
    max_window_norm,
    sobel_pixel_maps,
)


def test_f1_is_size_invariant_and_f2_finds_the_hot_window() -> None:
    rng = np.random.default_rng(0)
    tile = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(global_norm(tile.repeat(1, 1, 2, 2))) == pytest.approx(float(global_norm(tile)))
    edge = torch.zeros(1, 1, 64, 64)
    edge[..., 40:48, 8:16] = 2.0
    assert float(max_window_norm(edge, 8)) == pytest.approx(2.0)
    assert float(max_window_norm(edge, 16)) == pytest.approx(1.0)
    assert float(global_norm(edge)) < float(max_window_norm(edge, 16))
    assert rng is not None


@pytest.mark.parametrize("shape", [(3, 1, 64, 80), (1, 1, 9, 40)])
def test_fast_filters_equal_their_pytorch_definitions(shape: tuple[int, ...]) -> None:
    """OpenCV's blur and the two-pass box mean replace conv2d/avg_pool2d for speed only:
    same kernel, same reflected border (the 9-row image takes the replicate fallback at σ 4),
    same values to float rounding, and autograd still flows through the PyTorch path."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    for sigma in (0.7, 2.0, 4.0):
        k = _gaussian_kernel(sigma)
        r = k.numel() // 2
        ref = F.conv2d(F.conv2d(_pad(x, r), k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        torch.testing.assert_close(gaussian_blur(x, sigma), ref, rtol=0, atol=1e-5)
    for k in (4, 9):
        torch.testing.assert_close(box_mean(x, k), F.avg_pool2d(x, k, stride=1), rtol=0, atol=1e-5)
    g = x.clone().requires_grad_()
    gaussian_blur(g, 2.0).sum().backward()
    assert g.grad is not None and g.grad.shape == x.shape


def test_image_features_respond_to_a_local_disturbance_and_are_exact() -> None:
    rng = np.random.default_rng(1)
    noise = np.abs(rng.normal(size=(64, 64))).astype(np.float32)
    hot = noise.copy()
    hot[20:30, 20:30] *= 4
    cfg = FeatureConfig()
    a, b, small = image_features([noise, hot, noise[:20, :24]], cfg)
    assert b.f2 > 2 * a.f2 and b.f1 > a.f1
    assert b.pixel_map.shape == (64, 64) and b.pixel_map.dtype == np.float32
    assert small.pixel_map.shape == (20, 24)
    assert b.pixel_map[25, 25] > b.pixel_map[50, 50]
    shifted = np.empty(64 * 64 + 5, np.float32)[5:].reshape(64, 64)  # unaligned copy
    shifted[:] = noise
    (c,), (d,) = image_features([shifted], cfg), image_features([noise], cfg)
    assert c.f1 == d.f1 and c.f2 == d.f2 and np.array_equal(c.pixel_map, d.pixel_map)
    np.testing.assert_allclose(c.pixel_map, a.pixel_map, rtol=1e-5)


def test_lowpass_map_fills_a_systematic_residual_and_ignores_random_noise() -> None:
    """A defect biases ε̂ − ε the same way over its area; the network's random error does not.
    The low-pass map is high inside the biased patch; the Sobel map only along its outline."""
    rng = np.random.default_rng(2)
    resid = rng.normal(size=(1, 96, 96)).astype(np.float32)
    resid[0, 30:60, 30:60] += 1.0  # same sign over the patch
    cfg = FeatureConfig()
    (low,) = lowpass_pixel_maps([resid], cfg, sigma=4.0)
    assert low.shape == (96, 96) and low.dtype == np.float32
    assert low[45, 45] > 3 * np.median(low[:, 75:])  # centre of the patch vs clean area
    (sobel,) = sobel_pixel_maps([np.abs(resid[0])], cfg)
    assert low[45, 45] / low[30, 45] > sobel[45, 45] / sobel[30, 45]  # centre vs outline
    # channels add up: the same bias in three channels gives a √3 larger map
    (tri,) = lowpass_pixel_maps([np.repeat(resid, 3, 0)], cfg, 4.0)
    np.testing.assert_allclose(tri, np.sqrt(3) * low, rtol=1e-4)


def test_image_features_take_given_pixel_maps() -> None:
    rng = np.random.default_rng(3)
    maps = [np.abs(rng.normal(size=(32, 32))).astype(np.float32) for _ in range(2)]
    given = [np.full((32, 32), float(i), np.float32) for i in range(2)]
    plain = image_features(maps, FeatureConfig())
    with_given = image_features(maps, FeatureConfig(), given)
    for p, g, m in zip(plain, with_given, given, strict=True):
        assert (p.f1, p.f2) == (g.f1, g.f2) and np.array_equal(g.pixel_map, m)
    with pytest.raises(ValueError, match="pixel maps"):
        image_features(maps, FeatureConfig(), given[:1])


def test_defect_mask_opens_and_drops_small_components() -> None:
    amap = np.zeros((40, 40), np.float32)
    amap[5:15, 20:30] = 1.0  # 100 px region
    amap[30, 5] = 1.0  # single pixel: removed by the opening
    amap[30:33, 30:33] = 1.0  # 9 px: below min_area
    stats = defect_mask(amap, 0.5, FeatureConfig(min_area=16))
    assert stats.bbox is not None and stats.bbox[:2] == (20, 5)
    assert 80 <= stats.largest_area <= 100
    assert stats.defect_area == pytest.approx(stats.mask.sum() / 1600)
    assert stats.mask[31, 31] == 0 and stats.mask[30, 5] == 0
    empty = defect_mask(amap, 5.0, FeatureConfig())
    assert empty.defect_area == 0 and empty.bbox is None


def test_image_loading_is_bounded_and_converts_channels(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 2] = 200  # red in BGR order on disk
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), rgb)
    assert read_image(path, channels=3)[0, 0].tolist() == [200, 0, 0]
    assert read_image(path, channels=1).shape == (20, 30)
    with pytest.raises(ImageError, match=r"a\.png: .*exceeds the limit"):
        read_image(path, max_pixels=599)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"b\.png: not a PNG or JPEG"):
        read_image(bad)
    x = to_model_tensor([read_image(path, 3)], channels=1)
    assert x.shape == (1, 1, 20, 30) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert to_model_tensor([np.zeros((4, 4), np.uint8)], channels=3).shape == (1, 3, 4, 4)


def test_folders_and_test_set(category: Path) -> None:
    assert normal_image_folder(category) == category / "train" / "good"
    assert normal_image_folder(category / "test") == category / "test"
    files = list_images(category / "test")
    assert files == sorted(files) and len(files) == 8
    samples = mvtec_test_samples(category)
    assert [s.label for s in samples].count(1) == 4
    defect = next(s for s in samples if s.label == 1)
    mask = read_mask(defect, (32, 32))
    assert mask is not None and mask.any()
    good = next(s for s in samples if s.label == 0)
    assert not read_mask(good, (32, 32)).any()
