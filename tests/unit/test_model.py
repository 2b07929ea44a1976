import pytest
import torch

from lib.constants import BACKGROUND, NUM_CLASSES
from lib.model import SPEC, build_network, crop_at, enable_mc_dropout, heart_center, normalise_intensity, paste_at


@pytest.mark.parametrize("center", [(40, 50), (5, 5), (75, 70)])
def test_crop_then_paste_restores_what_was_inside(center):
    full = torch.rand(3, NUM_CLASSES, 80, 72)
    crop = crop_at(full, center, (32, 32))
    assert crop.shape == (3, NUM_CLASSES, 32, 32)
    back = paste_at(crop, center, (80, 72))
    inside = back[:, BACKGROUND] != 1.0
    assert torch.equal(back[inside.unsqueeze(1).expand_as(back)], full[inside.unsqueeze(1).expand_as(full)])
    assert bool((back[:, BACKGROUND][~inside] == 1.0).all())  # outside the crop: certain background


def test_heart_center_finds_the_blob_and_falls_back_when_empty():
    prob = torch.zeros(4, 100, 120)
    prob[:, 60:70, 20:30] = 0.9
    (row, col), found = heart_center(prob)
    assert found and abs(row - 64.5) <= 1 and abs(col - 24.5) <= 1
    assert heart_center(torch.zeros(4, 100, 120)) == ((50, 60), False)


def test_normalise_intensity_maps_robust_range_to_unit_interval():
    volume = torch.linspace(0, 1000, 10000).reshape(1, 100, 100)
    out = normalise_intensity(volume)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert float(out.median()) == pytest.approx(0.5, abs=0.01)


def test_network_gives_probabilities_on_the_input_grid():
    net = build_network().eval()
    x = torch.rand(1, 1, 150, 170, 3)
    with torch.no_grad():
        probs = net(x)
    assert probs.shape == (1, NUM_CLASSES, 150, 170, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(1, 150, 170, 3), atol=1e-4)
    center, found = net.locate(x[0])
    assert len(center) == 2 and isinstance(found, bool)


def test_mc_dropout_samples_differ_but_eval_is_deterministic():
    torch.manual_seed(0)
    net = build_network(dropout=0.3)
    x = torch.rand(1, 1, *SPEC.roi_size_vox)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net.segment(x), net.segment(x))
        enable_mc_dropout(net)
        assert not torch.equal(net.segment(x), net.segment(x))


def test_flip_averaged_probabilities_do_not_depend_on_how_the_plane_was_displayed():
    torch.manual_seed(0)
    network = build_network().eval()
    crops = torch.rand(2, 1, *SPEC.roi_size_vox)
    with torch.no_grad():
        probs = network.segment_probs(crops)
        plain = network.segment_probs(crops, flip_tta=False)
        for dims in ((2,), (3,), (2, 3)):
            assert torch.allclose(network.segment_probs(crops.flip(dims)).flip(dims), probs, atol=1e-5)
        # without averaging a random network's answer does change with the flip
        assert not torch.allclose(network.segment_probs(crops.flip(3), flip_tta=False).flip(3), plain, atol=1e-3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, *SPEC.roi_size_vox), atol=1e-5)


def test_each_slice_sees_its_stack_neighbours_as_channels_repeating_at_the_ends():
    from lib.model import with_neighbours

    stack = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)  # slice k is filled with k
    context = with_neighbours(stack, 1)
    assert context.shape == (4, 3, 2, 2)
    assert context[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert torch.equal(with_neighbours(stack, 0), stack)


def test_the_flip_passes_average_to_the_answer():
    torch.manual_seed(0)
    network = build_network().eval()
    image = torch.rand(1, 1, 80, 72, 3)
    with torch.no_grad():
        passes = network(image, keep_passes=True)
        assert passes.shape == (4, 1, 5, 80, 72, 3)
        assert torch.allclose(passes.mean(dim=0), network(image), atol=1e-6)
        assert not torch.allclose(passes[0], passes[1], atol=1e-4)  # each pass is its own flip
        assert network(image, flip_tta=False, keep_passes=True).shape == (1, 1, 5, 80, 72, 3)
