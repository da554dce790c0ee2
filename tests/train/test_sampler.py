import pytest

from facespace_train.sampler import PKSampler


def labels_of(counts):
    return [label for label, n in enumerate(counts) for _ in range(n)]


def batches(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_pk_structure_and_small_identities_repeat():
    labels = labels_of([10, 3, 1, 6, 2, 8])  # identity 2 has one image: never chosen
    s = PKSampler(labels, p=3, k=4, seed=1)
    assert 2 not in s.identities
    for batch in batches(s, 30):
        assert len(batch) == 12
        ids = [labels[i] for i, _ in batch]
        assert [ids[j * 4] for j in range(3)] == [ids[j * 4 + 3] for j in range(3)]
        assert len(set(ids)) == 3 and 2 not in ids
        for j in range(3):
            group = [i for i, _ in batch[j * 4 : (j + 1) * 4]]
            n_images = labels.count(ids[j * 4])
            assert len(set(group)) == min(4, n_images)


def test_partial_mode_keeps_small_identities_small():
    labels = labels_of([2, 2, 5])
    s = PKSampler(labels, p=2, k=4, small="partial", seed=0)
    sizes = {len(b) for b in batches(s, 10)}
    assert sizes <= {4, 6, 8}


def test_identities_and_images_are_covered_evenly():
    labels = labels_of([4] * 10)
    s = PKSampler(labels, p=5, k=2, seed=3)
    seen = [i for b in batches(s, 20) for i, _ in b]
    counts = [seen.count(i) for i in range(40)]
    assert min(counts) == max(counts) == 5  # 200 draws over 40 images


def test_reproducible_and_state_dict_resume():
    labels = labels_of([5, 7, 2, 9, 3, 4])
    a = PKSampler(labels, p=3, k=3, seed=7)
    first = batches(a, 5)
    state = a.state_dict()
    rest = batches(a, 7)
    b = PKSampler(labels, p=3, k=3, seed=123)
    b.load_state_dict(state)
    assert batches(b, 7) == rest
    c = PKSampler(labels, p=3, k=3, seed=7)
    assert batches(c, 12) == first + rest
    assert PKSampler(labels, p=3, k=3, seed=8).next_global_batch() != first[0]


def test_ranks_split_the_global_batch():
    labels = labels_of([6] * 8)
    whole = batches(PKSampler(labels, p=4, k=3, seed=5), 4)
    r0 = batches(PKSampler(labels, p=4, k=3, seed=5, rank=0, world_size=2), 4)
    r1 = batches(PKSampler(labels, p=4, k=3, seed=5, rank=1, world_size=2), 4)
    assert [x + y for x, y in zip(r0, r1)] == whole
    with pytest.raises(ValueError):
        PKSampler(labels, p=3, k=3, world_size=2)


def test_errors():
    with pytest.raises(ValueError):
        PKSampler(labels_of([1, 1, 5]), p=2, k=2)  # one usable identity
    with pytest.raises(ValueError):
        PKSampler(labels_of([3, 3]), p=3, k=2)
